package security

import "errors"

// Errors that name the cause of a failed decryption, never the key.
var (
	// ErrWrongKey: the padding did not check out, so the key is wrong or the data was altered.
	ErrWrongKey = errors.New("wrong key or corrupted data")
	// ErrTruncated: the ciphertext is shorter than IV plus one block, or not a whole number of blocks.
	ErrTruncated = errors.New("ciphertext truncated")
	// ErrKeySize: the key given is not a 32-byte AES-256 key (a programming error, not bad data).
	ErrKeySize = errors.New("AES-256 key must be 32 bytes")
)
