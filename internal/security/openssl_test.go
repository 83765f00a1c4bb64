package security

import (
	"bytes"
	"fmt"
	"io"
	"testing"
)

// Cross-implementation tests: the openssl command line tool is the other side.

func TestEncrypterOpenSSL(t *testing.T) {
	for _, n := range testSizes {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			plain := plaintext(n)
			var buf bytes.Buffer
			w, err := NewEncrypter(&buf, testKey)
			if err != nil {
				t.Fatal(err)
			}
			// Odd-sized writes exercise the partial-block paths.
			for p, step := plain, 1; len(p) > 0; step = step*3 + 1 {
				k := min(step, len(p))
				if _, err := w.Write(p[:k]); err != nil {
					t.Fatal(err)
				}
				p = p[k:]
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			ct := buf.Bytes()
			if int64(len(ct)) != EncryptedSize(int64(n)) {
				t.Fatalf("ciphertext is %d bytes, want %d", len(ct), EncryptedSize(int64(n)))
			}
			if got := opensslDec(t, ct, testKey); !bytes.Equal(got, plain) {
				t.Fatalf("openssl decrypted %d bytes that differ from the %d written", len(got), n)
			}
		})
	}
}

func TestEncryptReaderOpenSSL(t *testing.T) {
	for _, n := range testSizes {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			plain := plaintext(n)
			r, err := NewEncryptReader(bytes.NewReader(plain), testKey)
			if err != nil {
				t.Fatal(err)
			}
			ct, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(ct)) != EncryptedSize(int64(n)) {
				t.Fatalf("ciphertext is %d bytes, want %d", len(ct), EncryptedSize(int64(n)))
			}
			if got := opensslDec(t, ct, testKey); !bytes.Equal(got, plain) {
				t.Fatalf("openssl decrypted %d bytes that differ from the %d read", len(got), n)
			}
		})
	}
}

func TestEncryptOpenSSL(t *testing.T) {
	for _, n := range testSizes {
		plain := plaintext(n)
		ct, err := Encrypt(plain, testKey)
		if err != nil {
			t.Fatal(err)
		}
		if got := opensslDec(t, ct, testKey); !bytes.Equal(got, plain) {
			t.Fatalf("size %d: openssl decrypted %d bytes that differ", n, len(got))
		}
	}
}

func TestDecryptOpenSSL(t *testing.T) {
	for _, n := range testSizes {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			plain := plaintext(n)
			ct := opensslEnc(t, plain, testKey, testIV)
			if want := encryptIV(plain, testKey, testIV); !bytes.Equal(ct, want) {
				t.Fatal("openssl and crypto/cipher disagree on the ciphertext")
			}

			got, err := io.ReadAll(NewDecrypter(bytes.NewReader(ct), testKey))
			if err != nil || !bytes.Equal(got, plain) {
				t.Errorf("NewDecrypter: %d bytes, %v; want the %d plaintext bytes", len(got), err, n)
			}
			got, err = Decrypt(ct, testKey)
			if err != nil || !bytes.Equal(got, plain) {
				t.Errorf("Decrypt: %d bytes, %v; want the %d plaintext bytes", len(got), err, n)
			}
			size, err := PlaintextSize(bytes.NewReader(ct), int64(len(ct)), testKey)
			if err != nil || size != int64(n) {
				t.Errorf("PlaintextSize = %d, %v; want %d", size, err, n)
			}
		})
	}
}
