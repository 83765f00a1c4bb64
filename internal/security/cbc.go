package security

import (
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"
	"fmt"
)

// Encrypt returns IV ‖ AES-256-CBC(PKCS#7(plain)) with a fresh random IV. It holds the whole
// result in memory: use NewEncrypter or NewEncryptReader for large data.
func Encrypt(plain, key []byte) ([]byte, error) {
	block, err := newBlock(key)
	if err != nil {
		return nil, err
	}
	out := make([]byte, EncryptedSize(int64(len(plain))))
	iv, body := out[:BlockSize], out[BlockSize:]
	if _, err := rand.Read(iv); err != nil {
		return nil, fmt.Errorf("security: random IV: %w", err)
	}
	n := copy(body, plain)
	pad(body[n:])
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(body, body)
	return out, nil
}

// Decrypt reverses Encrypt. It returns ErrTruncated if ciphertext is not IV plus at least one
// whole block, and ErrWrongKey if any padding byte is wrong; it never returns partial plaintext.
func Decrypt(ciphertext, key []byte) ([]byte, error) {
	kernel, err := newKernel(key, true)
	if err != nil {
		return nil, err
	}
	if err := checkLength(int64(len(ciphertext))); err != nil {
		return nil, err
	}
	iv, body := [BlockSize]byte(ciphertext[:BlockSize]), ciphertext[BlockSize:]
	out := make([]byte, len(body))
	dec := kernel.decrypter()
	dec.decrypt(&iv, out, body)
	n, ok := unpad(out[len(out)-BlockSize:])
	if !ok {
		clear(out)
		return nil, errPadding
	}
	return out[:len(out)-n], nil
}

// errPadding is what every decryption path returns on a bad pad, so they all read the same.
var errPadding = fmt.Errorf("security: bad padding in the last block: %w", ErrWrongKey)

// checkLength reports whether size bytes can be IV ‖ CBC ciphertext at all.
func checkLength(size int64) error {
	if size < 2*BlockSize || size%BlockSize != 0 {
		return fmt.Errorf("security: %d bytes are not an IV plus whole %d-byte blocks: %w",
			size, BlockSize, ErrTruncated)
	}
	return nil
}

// pad fills p, which holds 1 to BlockSize bytes, with PKCS#7 padding of len(p).
func pad(p []byte) {
	for i := range p {
		p[i] = byte(len(p))
	}
}

// unpad returns the PKCS#7 padding length of the decrypted last block and whether every
// padding byte is right. It runs in constant time so timing does not reveal which byte
// failed (the error itself is a padding oracle only to whoever sees it).
func unpad(last []byte) (int, bool) {
	_ = last[BlockSize-1]
	n := int(last[BlockSize-1])
	good := subtle.ConstantTimeLessOrEq(1, n) & subtle.ConstantTimeLessOrEq(n, BlockSize)
	for i := range BlockSize {
		inPad := subtle.ConstantTimeLessOrEq(BlockSize-i, n)
		match := subtle.ConstantTimeByteEq(last[i], byte(n))
		good &= (inPad ^ 1) | match
	}
	return n, good == 1
}
