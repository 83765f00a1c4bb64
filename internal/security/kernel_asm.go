//go:build (amd64 || arm64) && !purego

package security

// The assembly kernels of cbc_amd64.s and cbc_arm64.s; see kernel.go.

// expandDecKeys writes the AES-256 decryption round keys of key, in the order the kernel
// uses them, to dk.
//
//go:noescape
func expandDecKeys(key *[KeySize]byte, dk *[decKeysSize]byte)

// cbcDecryptAsm is cbcDecrypter.decrypt without the checks: len(src) a multiple of
// BlockSize, len(dst) == len(src), dst == src or no overlap.
//
//go:noescape
func cbcDecryptAsm(dk *[decKeysSize]byte, iv *[BlockSize]byte, dst, src []byte)
