//go:build (!amd64 && !arm64) || purego

package security

// No assembly kernel in this build: crypto/cipher decrypts (see kernel.go).
const asmSupported = false

const asmKernelName = ""

func expandDecKeys(*[KeySize]byte, *[decKeysSize]byte) { panic("security: no assembly kernel") }

func cbcDecryptAsm(*[decKeysSize]byte, *[BlockSize]byte, []byte, []byte) {
	panic("security: no assembly kernel")
}
