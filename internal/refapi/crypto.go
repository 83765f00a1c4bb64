package refapi

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"io"
)

// This file is the server's own copy of SPEC §4. It deliberately does not share code with
// internal/security: the reference API is the independent other side that the loader's
// cryptography is checked against, so a bug in one must not hide in both.

// hashString is SPEC §4's hash(s): standard Base64 of SHA-384 over the UTF-8 bytes of s.
func hashString(s string) string {
	sum := sha512.Sum384([]byte(s))
	return base64.StdEncoding.EncodeToString(sum[:])
}

// hardwareHash is SPEC §4's hardware hash of a raw fingerprint string.
func hardwareHash(hardware string) string {
	return hashString("Azaion_" + hardware + "_%$$$)0_")
}

// apiKey is SPEC §4's per-user API key: the key string resources are encrypted with on the
// way to that user on that hardware.
func apiKey(email, password, hardware string) string {
	return hashString(email + "-" + password + "-" + hardwareHash(hardware) + "-#%@AzaionKey@%#---")
}

// aesKey turns a key string into the AES-256 key: SHA-256 of its UTF-8 bytes.
func aesKey(key string) [32]byte {
	return sha256.Sum256([]byte(key))
}

// encryptedSize is the length of IV ‖ AES-256-CBC(PKCS#7(plaintext)) for a plaintext of n bytes.
// PKCS#7 always adds 1..16 bytes, so a whole block of padding follows an aligned plaintext.
func encryptedSize(n int64) int64 {
	return aes.BlockSize + (n/aes.BlockSize+1)*aes.BlockSize
}

// chunkSize is how much plaintext is encrypted per write: big enough to keep syscalls few,
// small enough that a multi-gigabyte resource never sits in memory.
const chunkSize = 64 << 10 // a multiple of aes.BlockSize

// encryptStream writes IV ‖ AES-256-CBC(PKCS#7(src)) to w, encrypting with the AES key derived
// from key. It reads src chunk by chunk, so memory use does not depend on the plaintext size.
func encryptStream(w io.Writer, src io.Reader, key string) error {
	k := aesKey(key)
	block, err := aes.NewCipher(k[:])
	if err != nil {
		return err
	}
	iv := make([]byte, aes.BlockSize)
	if _, err := rand.Read(iv); err != nil {
		return err
	}
	if _, err := w.Write(iv); err != nil {
		return err
	}
	mode := cipher.NewCBCEncrypter(block, iv)
	// One spare block so the final chunk can be padded in place.
	buf := make([]byte, chunkSize+aes.BlockSize)
	for {
		n, err := io.ReadFull(src, buf[:chunkSize])
		switch {
		case err == nil:
			mode.CryptBlocks(buf[:n], buf[:n])
			if _, err := w.Write(buf[:n]); err != nil {
				return err
			}
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
			// The last, short (possibly empty) chunk: pad it and finish.
			pad := aes.BlockSize - n%aes.BlockSize
			for i := range pad {
				buf[n+i] = byte(pad)
			}
			n += pad
			mode.CryptBlocks(buf[:n], buf[:n])
			_, err := w.Write(buf[:n])
			return err
		default:
			return err
		}
	}
}
