// Package security derives the Azaion keys and encrypts and decrypts with AES-256-CBC in the
// format every Azaion component shares (SPEC §4): IV ‖ AES-256-CBC(PKCS#7(plaintext)).
//
// The streaming forms keep a fixed-size buffer whatever the length of the data, so a
// multi-gigabyte archive can be decrypted straight into its consumer.
package security

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"fmt"
)

// BlockSize is the AES block size in bytes; ciphertext is IV plus whole blocks of it.
const BlockSize = aes.BlockSize

// KeySize is the length of an AES-256 key, the only length the functions here accept.
const KeySize = 32

// chunkSize is how much data the encrypting streams handle per step: large enough that the
// per-call cost of CBC is negligible, small enough to stay in cache. NewDecrypter, which can
// spread a step over several cores, uses the larger decryptChunkSize.
const chunkSize = 64 << 10

// Hash is the standard Base64 of SHA-384 over the UTF-8 bytes of s.
func Hash(s string) string {
	sum := sha512.Sum384([]byte(s))
	return base64.StdEncoding.EncodeToString(sum[:])
}

// HardwareHash is the hash of a device's hardware fingerprint string.
func HardwareHash(hardware string) string {
	return Hash("Azaion_" + hardware + "_%$$$)0_")
}

// APIKey is the key string with which the Resource API encrypts what it sends to one user
// on one device.
func APIKey(email, password, hardwareHash string) string {
	return Hash(email + "-" + password + "-" + hardwareHash + "-#%@AzaionKey@%#---")
}

// ResourceKey is the key string of model resources, shared by all users.
func ResourceKey() string {
	return Hash("-#%@AzaionKey@%#---234sdfklgvhjbnn")
}

// KeyFromString turns a key string into the AES-256 key used with it: SHA-256 of its UTF-8 bytes.
func KeyFromString(k string) []byte {
	sum := sha256.Sum256([]byte(k))
	return sum[:]
}

// ArchiveKey is the AES-256 key of the Docker image archive: SHA-256 of the raw key fragment.
func ArchiveKey(fragment []byte) []byte {
	sum := sha256.Sum256(fragment)
	return sum[:]
}

// EncryptedSize is the length of the ciphertext of plainSize bytes: IV plus the padded blocks.
// PKCS#7 always adds at least one byte, so a whole number of blocks gains a full block.
func EncryptedSize(plainSize int64) int64 {
	return BlockSize + (plainSize/BlockSize+1)*BlockSize
}

// newBlock checks the key length and returns the AES-256 cipher. The error names only the
// length, never the key.
func newBlock(key []byte) (cipher.Block, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("security: key of %d bytes: %w", len(key), ErrKeySize)
	}
	return aes.NewCipher(key)
}
