package security

import (
	"bytes"
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
