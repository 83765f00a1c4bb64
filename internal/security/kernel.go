package security

import (
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"unsafe"
)

// The CBC decryption kernel (SPEC §13). crypto/cipher decrypts CBC one AES block per call on
// amd64 and arm64, which leaves the AES unit idle most of the time: a block's AES takes
// several cycles of latency, but the unit can start a new one every cycle. CBC decryption has
// no chaining between the AES calls, so the assembly kernels (cbc_amd64.s, cbc_arm64.s) keep
// eight blocks in flight and fold the XOR with the previous ciphertext block into the last
// round. Their decryption key schedule is computed with the AES instructions themselves
// (AESKEYGENASSIST, or AESE with a zero round key; then AESIMC), never with a table indexed
// by key bytes. Elsewhere, under the purego build tag, or on a CPU without the AES
// instructions, crypto/cipher does the work as before.

// decKeysSize is the size of an AES-256 decryption key schedule: 15 round keys.
const decKeysSize = 15 * BlockSize

// cbcKernel is one key's CBC decryption. It is read-only once made, so the goroutines of a
// cbcPool share it; each of them decrypts through its own cbcDecrypter.
type cbcKernel struct {
	dk    *[decKeysSize]byte // the assembly kernel's schedule; nil when crypto/cipher is used
	block cipher.Block       // for crypto/cipher
}

// newKernel returns key's kernel, the assembly one if useAsm (asmSupported, or false in
// tests of the fallback). The error names only the key's length.
func newKernel(key []byte, useAsm bool) (*cbcKernel, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("security: key of %d bytes: %w", len(key), ErrKeySize)
	}
	if useAsm && asmSupported {
		dk := new([decKeysSize]byte)
		expandDecKeys((*[KeySize]byte)(key), dk)
		return &cbcKernel{dk: dk}, nil
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return &cbcKernel{block: block}, nil
}

// asm reports whether k is the assembly kernel.
func (k *cbcKernel) asm() bool { return k.dk != nil }

// decrypter returns a cbcDecrypter for one goroutine.
func (k *cbcKernel) decrypter() cbcDecrypter {
	d := cbcDecrypter{k: k}
	if k.dk == nil {
		var zero [BlockSize]byte
		d.mode = cipher.NewCBCDecrypter(k.block, zero[:])
	}
	return d
}

// cbcDecrypter decrypts with a kernel; crypto/cipher's mode carries an IV, so each goroutine
// needs its own.
type cbcDecrypter struct {
	k    *cbcKernel
	mode cipher.BlockMode // crypto/cipher only
}

// ivSetter is the SetIV method that crypto/cipher's CBC modes have (crypto/tls relies on it).
type ivSetter interface{ SetIV(iv []byte) }

// decrypt decrypts src, whole blocks that follow the ciphertext block iv, into dst, which
// must be src itself or not overlap it, and sets iv to the last ciphertext block of src, the
// IV of whatever follows. Like crypto/cipher it panics on a partial block, a short dst or an
// inexact overlap, which are programming errors.
func (d *cbcDecrypter) decrypt(iv *[BlockSize]byte, dst, src []byte) {
	if len(src)%BlockSize != 0 {
		panic("security: CBC input not full blocks")
	}
	if len(dst) < len(src) {
		panic("security: CBC output smaller than input")
	}
	if len(src) == 0 {
		return
	}
	dst = dst[:len(src)]
	if inexactOverlap(dst, src) {
		panic("security: invalid buffer overlap")
	}
	if d.k.dk != nil {
		cbcDecryptAsm(d.k.dk, iv, dst, src)
		return
	}
	next := [BlockSize]byte(src[len(src)-BlockSize:])
	if m, ok := d.mode.(ivSetter); ok {
		m.SetIV(iv[:])
	} else {
		d.mode = cipher.NewCBCDecrypter(d.k.block, iv[:])
	}
	d.mode.CryptBlocks(dst, src)
	*iv = next
}

// inexactOverlap reports whether x and y share memory at different offsets, which the
// in-place decryption cannot handle (the same rule as crypto/cipher's).
func inexactOverlap(x, y []byte) bool {
	if len(x) == 0 || len(y) == 0 || &x[0] == &y[0] {
		return false
	}
	x0, y0 := uintptr(unsafe.Pointer(&x[0])), uintptr(unsafe.Pointer(&y[0]))
	return x0 <= y0+uintptr(len(y)-1) && y0 <= x0+uintptr(len(x)-1)
}

// Kernel names the CBC decryption code this build uses on this CPU, for benchmarks and
// diagnostics.
func Kernel() string {
	if asmSupported {
		return asmKernelName
	}
	return "crypto/cipher (one block at a time)"
}

// NewCBCDecrypter returns a cipher.BlockMode that decrypts AES-256-CBC blocks with key,
// following the ciphertext block iv, on the kernel NewDecrypter runs on each core. It is for
// data already in memory in whole blocks (and for benchmarks); NewDecrypter handles padding.
// CryptBlocks panics, as crypto/cipher's does, on a partial block, a short dst or an inexact
// overlap of dst and src.
func NewCBCDecrypter(key, iv []byte) (cipher.BlockMode, error) {
	kernel, err := newKernel(key, true)
	if err != nil {
		return nil, err
	}
	if len(iv) != BlockSize {
		return nil, fmt.Errorf("security: IV of %d bytes, want %d", len(iv), BlockSize)
	}
	return &cbcMode{dec: kernel.decrypter(), iv: [BlockSize]byte(iv)}, nil
}

// cbcMode is NewCBCDecrypter's cipher.BlockMode: a kernel and the IV it has reached.
type cbcMode struct {
	dec cbcDecrypter
	iv  [BlockSize]byte
}

func (m *cbcMode) BlockSize() int { return BlockSize }

func (m *cbcMode) CryptBlocks(dst, src []byte) { m.dec.decrypt(&m.iv, dst, src) }
