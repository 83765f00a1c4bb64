package security

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"fmt"
	"io"
	"testing"
	"testing/iotest"
)

// FuzzDecrypt checks that no input panics, that plaintext is only ever accepted with valid
// padding (re-encrypting it with the same IV must give back the input), and that the three
// ways to decrypt agree, NewDecrypter with its parallel path forced too.
func FuzzDecrypt(f *testing.F) {
	for _, n := range []int{0, 1, 15, 16, 17, 100} {
		ct := encryptIV(plaintext(n), testKey, testIV)
		f.Add(ct, false)
		f.Add(ct[:len(ct)-1], true)
	}
	f.Add([]byte{}, false)
	f.Add(make([]byte, 48), true)
	f.Fuzz(func(t *testing.T, ct []byte, oneByte bool) {
		plain, err := Decrypt(ct, testKey)
		if err != nil {
			if plain != nil {
				t.Fatalf("Decrypt returned %d bytes with error %v", len(plain), err)
			}
			if !errors.Is(err, ErrWrongKey) && !errors.Is(err, ErrTruncated) {
				t.Fatalf("Decrypt: unexpected error %v", err)
			}
		} else if re := encryptIV(plain, testKey, ct[:BlockSize]); !bytes.Equal(re, ct) {
			t.Fatalf("Decrypt accepted input that is not a valid encryption")
		}

		var r io.Reader = bytes.NewReader(ct)
		if oneByte {
			r = iotest.OneByteReader(r)
		}
		out, serr := io.ReadAll(NewDecrypter(r, testKey))
		switch {
		case err == nil && (serr != nil || !bytes.Equal(out, plain)):
			t.Fatalf("NewDecrypter: %d bytes, %v; Decrypt gave %d bytes", len(out), serr, len(plain))
		case err != nil && !sameSentinel(err, serr):
			t.Fatalf("NewDecrypter error %v, Decrypt error %v", serr, err)
		case err != nil && len(out) > max(len(ct)-2*BlockSize, 0):
			t.Fatalf("NewDecrypter handed out %d bytes of a bad final block", len(out))
		}

		// The parallel path, cut into one-block pieces, must give the same bytes and error.
		r = bytes.NewReader(ct)
		if oneByte {
			r = iotest.OneByteReader(r)
		}
		pout, pserr := io.ReadAll(newDecrypter(r, testKey, 3, BlockSize))
		if !bytes.Equal(pout, out) || fmt.Sprint(pserr) != fmt.Sprint(serr) {
			t.Fatalf("parallel NewDecrypter: %d bytes, %v; sequential: %d bytes, %v", len(pout), pserr, len(out), serr)
		}

		size, perr := PlaintextSize(bytes.NewReader(ct), int64(len(ct)), testKey)
		switch {
		case err == nil && (perr != nil || size != int64(len(plain))):
			t.Fatalf("PlaintextSize = %d, %v; Decrypt gave %d bytes", size, perr, len(plain))
		case err != nil && !sameSentinel(err, perr):
			t.Fatalf("PlaintextSize error %v, Decrypt error %v", perr, err)
		}
	})
}

func sameSentinel(a, b error) bool {
	return errors.Is(a, ErrWrongKey) == errors.Is(b, ErrWrongKey) &&
		errors.Is(a, ErrTruncated) == errors.Is(b, ErrTruncated)
}

// FuzzCBCKernel checks every kernel against crypto/cipher on any key, IV and data (cut to
// whole blocks), from and to any offset and in place: the same plaintext, the same IV passed
// on, nothing written outside the destination.
func FuzzCBCKernel(f *testing.F) {
	f.Add(testKey, testIV, encryptIV(plaintext(100), testKey, testIV), uint8(0), uint8(0), false)
	f.Add(make([]byte, KeySize), make([]byte, BlockSize), make([]byte, 8*BlockSize), uint8(3), uint8(7), true)
	f.Add([]byte("k"), []byte("iv"), bytes.Repeat([]byte{0xff}, 9*BlockSize+5), uint8(15), uint8(1), false)
	f.Fuzz(func(t *testing.T, key, iv, data []byte, srcOff, dstOff uint8, inPlace bool) {
		key = append(bytes.Clone(key), make([]byte, KeySize)...)[:KeySize]
		iv = append(bytes.Clone(iv), make([]byte, BlockSize)...)[:BlockSize]
		data = data[:len(data)/BlockSize*BlockSize]
		block, err := aes.NewCipher(key)
		if err != nil {
			t.Fatal(err)
		}
		want := make([]byte, len(data))
		cipher.NewCBCDecrypter(block, iv).CryptBlocks(want, data)
		so, do := int(srcOff%64), int(dstOff%64)
		for _, tk := range testKernels(t, key) {
			src := append(bytes.Repeat([]byte{canary}, so), data...)
			src = append(src, bytes.Repeat([]byte{canary}, BlockSize)...)
			dst := bytes.Repeat([]byte{canary}, do+len(data)+BlockSize)
			out := dst[do : do+len(data)]
			if inPlace {
				out = src[so : so+len(data)]
			}
			civ := [BlockSize]byte(iv)
			dec := tk.kernel.decrypter()
			dec.decrypt(&civ, out, src[so:so+len(data)])
			if !bytes.Equal(out, want) {
				t.Fatalf("%s: %d bytes differ from crypto/cipher's at %d", tk.name, len(data), firstDiff(out, want))
			}
			if len(data) > 0 && !bytes.Equal(civ[:], data[len(data)-BlockSize:]) {
				t.Fatalf("%s: the IV passed on is not the last ciphertext block", tk.name)
			}
			if !allByte(src[:so], canary) || !allByte(src[so+len(data):], canary) ||
				!allByte(dst[:do], canary) || !allByte(dst[do+len(data):], canary) {
				t.Fatalf("%s: bytes outside the buffers changed", tk.name)
			}
		}
	})
}
