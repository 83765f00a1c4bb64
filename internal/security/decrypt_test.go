package security

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestRoundTrip(t *testing.T) {
	for _, n := range testSizes {
		plain := plaintext(n)
		ct, err := Encrypt(plain, testKey)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decrypt(ct, testKey)
		if err != nil || !bytes.Equal(got, plain) {
			t.Errorf("size %d: Decrypt(Encrypt) = %d bytes, %v", n, len(got), err)
		}
	}
}

func TestBadCiphertext(t *testing.T) {
	const n = 4096 + 5
	plain := plaintext(n)
	good := encryptIV(plain, testKey, testIV)
	flip := func(i int, bit byte) []byte {
		c := bytes.Clone(good)
		c[i] ^= bit
		return c
	}
	for _, tc := range []struct {
		name string
		ct   []byte
		key  []byte
		want error
		// garbled: the output before the last block is not plaintext either
		garbled bool
	}{
		{"wrong key", good, KeyFromString("another key"), ErrWrongKey, true},
		{"bit flipped in last block", flip(len(good)-5, 0x10), testKey, ErrWrongKey, false},
		{"pad byte flipped via previous block", flip(len(good)-BlockSize-1, 0x01), testKey, ErrWrongKey, true},
		{"truncated by 1", good[:len(good)-1], testKey, ErrTruncated, false},
		// A whole block missing cannot be told from a wrong key: the new last block's
		// "padding" is plaintext, which plaintext() keeps above 16.
		{"truncated by 16", good[:len(good)-BlockSize], testKey, ErrWrongKey, false},
		{"not whole blocks", append(bytes.Clone(good), 1, 2, 3), testKey, ErrTruncated, false},
		{"31 bytes", good[:31], testKey, ErrTruncated, false},
		{"IV only", good[:BlockSize], testKey, ErrTruncated, false},
		{"7 bytes", good[:7], testKey, ErrTruncated, false},
		{"empty", nil, testKey, ErrTruncated, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := Decrypt(tc.ct, tc.key)
			if !errors.Is(err, tc.want) || out != nil {
				t.Errorf("Decrypt = %d bytes, %v; want nil, %v", len(out), err, tc.want)
			}

			out, err = io.ReadAll(NewDecrypter(bytes.NewReader(tc.ct), tc.key))
			if !errors.Is(err, tc.want) {
				t.Errorf("NewDecrypter: error %v, want %v", err, tc.want)
			}
			if len(out) >= n {
				t.Errorf("NewDecrypter handed out %d bytes of %d", len(out), n)
			}
			// Never any byte of the final (bad) block: at most everything before it.
			if limit := max(len(tc.ct)/BlockSize*BlockSize-2*BlockSize, 0); len(out) > limit {
				t.Errorf("NewDecrypter handed out %d bytes, more than the %d before the last block", len(out), limit)
			}
			if !tc.garbled && !bytes.HasPrefix(plain, out) {
				t.Errorf("NewDecrypter output is not a prefix of the plaintext")
			}

			size, err := PlaintextSize(bytes.NewReader(tc.ct), int64(len(tc.ct)), tc.key)
			if !errors.Is(err, tc.want) || size != 0 {
				t.Errorf("PlaintextSize = %d, %v; want 0, %v", size, err, tc.want)
			}
		})
	}
}

func TestPlaintextSizeShortReaderAt(t *testing.T) {
	ct := encryptIV(plaintext(100), testKey, testIV)
	// The stated size is larger than what the ReaderAt holds.
	_, err := PlaintextSize(bytes.NewReader(ct), int64(len(ct)+BlockSize), testKey)
	if !errors.Is(err, ErrTruncated) {
		t.Errorf("PlaintextSize with a short ReaderAt: %v, want ErrTruncated", err)
	}
}

func TestKeySize(t *testing.T) {
	// Printable, so a leak would show as a substring of the message.
	for _, key := range []string{"", "0123456789abcdef", "0123456789ABCDEFGHIJKLMNOPQRSTU", "0123456789ABCDEFGHIJKLMNOPQRSTUVW"} {
		k := []byte(key)
		var errs []error
		_, err := Encrypt(nil, k)
		errs = append(errs, err)
		_, err = Decrypt(make([]byte, 32), k)
		errs = append(errs, err)
		_, err = NewEncrypter(io.Discard, k)
		errs = append(errs, err)
		_, err = NewEncryptReader(strings.NewReader("x"), k)
		errs = append(errs, err)
		_, err = io.ReadAll(NewDecrypter(bytes.NewReader(make([]byte, 32)), k))
		errs = append(errs, err)
		_, err = PlaintextSize(bytes.NewReader(make([]byte, 32)), 32, k)
		errs = append(errs, err)
		for i, err := range errs {
			if !errors.Is(err, ErrKeySize) {
				t.Errorf("key of %d bytes, call %d: %v, want ErrKeySize", len(k), i, err)
				continue
			}
			for j := 0; j+4 <= len(key); j++ {
				if strings.Contains(err.Error(), key[j:j+4]) {
					t.Errorf("key of %d bytes, call %d: error %q shows key bytes", len(k), i, err)
					break
				}
			}
		}
	}
}

func TestDecrypterReaders(t *testing.T) {
	plain := plaintext(3*chunkSize + 7)
	ct := encryptIV(plain, testKey, testIV)
	for _, tc := range []struct {
		name string
		r    func() io.Reader
	}{
		{"one byte", func() io.Reader { return iotest.OneByteReader(bytes.NewReader(ct)) }},
		{"half", func() io.Reader { return iotest.HalfReader(bytes.NewReader(ct)) }},
		{"data with EOF", func() io.Reader { return iotest.DataErrReader(bytes.NewReader(ct)) }},
		{"data with EOF, one byte", func() io.Reader {
			return iotest.DataErrReader(iotest.OneByteReader(bytes.NewReader(ct)))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := io.ReadAll(NewDecrypter(tc.r(), testKey))
			if err != nil || !bytes.Equal(got, plain) {
				t.Errorf("got %d bytes, %v; want %d bytes", len(got), err, len(plain))
			}
			if err := iotest.TestReader(NewDecrypter(tc.r(), testKey), plain); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestDecrypterReadError(t *testing.T) {
	ct := encryptIV(plaintext(chunkSize+100), testKey, testIV)
	boom := errors.New("connection reset")
	for _, cut := range []int{0, 10, BlockSize, 40, chunkSize, len(ct) - 1} {
		r := io.MultiReader(bytes.NewReader(ct[:cut]), iotest.ErrReader(boom))
		out, err := io.ReadAll(NewDecrypter(r, testKey))
		if !errors.Is(err, boom) {
			t.Errorf("cut at %d: error %v, want %v", cut, err, boom)
		}
		if len(out) > max(cut-2*BlockSize, 0) {
			t.Errorf("cut at %d: handed out %d bytes", cut, len(out))
		}
	}
}

func TestDecrypterNoProgress(t *testing.T) {
	_, err := io.ReadAll(NewDecrypter(emptyReader{}, testKey))
	if !errors.Is(err, io.ErrNoProgress) {
		t.Errorf("error %v, want io.ErrNoProgress", err)
	}
}

type emptyReader struct{}

func (emptyReader) Read([]byte) (int, error) { return 0, nil }

func TestEncrypterWriteError(t *testing.T) {
	boom := errors.New("disk full")
	w, err := NewEncrypter(failWriter{boom}, testKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(plaintext(10)); err != nil {
		t.Fatalf("buffered write failed: %v", err)
	}
	if err := w.Close(); !errors.Is(err, boom) {
		t.Errorf("Close: %v, want %v", err, boom)
	}
	w, _ = NewEncrypter(failWriter{boom}, testKey)
	if _, err := w.Write(plaintext(2 * chunkSize)); !errors.Is(err, boom) {
		t.Errorf("Write: %v, want %v", err, boom)
	}
}

type failWriter struct{ err error }

func (f failWriter) Write([]byte) (int, error) { return 0, f.err }

func TestEncrypterClose(t *testing.T) {
	var buf bytes.Buffer
	w, _ := NewEncrypter(&buf, testKey)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := w.Write([]byte("x")); err == nil {
		t.Error("Write after Close succeeded")
	}
	if buf.Len() != 2*BlockSize {
		t.Errorf("empty plaintext gave %d bytes, want %d", buf.Len(), 2*BlockSize)
	}
}

func TestEncryptReaderReaders(t *testing.T) {
	plain := plaintext(2*chunkSize + 5)
	for _, r := range []io.Reader{
		iotest.OneByteReader(bytes.NewReader(plain)),
		iotest.DataErrReader(bytes.NewReader(plain)),
		iotest.HalfReader(bytes.NewReader(plain)),
	} {
		er, err := NewEncryptReader(r, testKey)
		if err != nil {
			t.Fatal(err)
		}
		ct, err := io.ReadAll(er)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := Decrypt(ct, testKey); err != nil || !bytes.Equal(got, plain) {
			t.Errorf("round trip: %d bytes, %v", len(got), err)
		}
	}
	boom := errors.New("client went away")
	er, _ := NewEncryptReader(io.MultiReader(bytes.NewReader(plain[:100]), iotest.ErrReader(boom)), testKey)
	if _, err := io.ReadAll(er); !errors.Is(err, boom) {
		t.Errorf("read error: %v, want %v", err, boom)
	}
}
