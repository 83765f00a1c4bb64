package security

import (
	"bytes"
	"io"
	"testing"
)

// TestRandomIV: every way to encrypt draws a fresh IV, so the same plaintext under the same
// key never gives the same ciphertext twice (SPEC §4), and each result still decrypts.
func TestRandomIV(t *testing.T) {
	plain := plaintext(100)
	encrypters := []struct {
		name    string
		encrypt func() ([]byte, error)
	}{
		{"Encrypt", func() ([]byte, error) { return Encrypt(plain, testKey) }},
		{"NewEncrypter", func() ([]byte, error) {
			var buf bytes.Buffer
			w, err := NewEncrypter(&buf, testKey)
			if err != nil {
				return nil, err
			}
			if _, err := w.Write(plain); err != nil {
				return nil, err
			}
			err = w.Close()
			return buf.Bytes(), err
		}},
		{"NewEncryptReader", func() ([]byte, error) {
			r, err := NewEncryptReader(bytes.NewReader(plain), testKey)
			if err != nil {
				return nil, err
			}
			return io.ReadAll(r)
		}},
	}
	var all [][]byte
	for _, e := range encrypters {
		t.Run(e.name, func(t *testing.T) {
			var cts [2][]byte
			for i := range cts {
				ct, err := e.encrypt()
				if err != nil {
					t.Fatal(err)
				}
				if len(ct) != int(EncryptedSize(int64(len(plain)))) {
					t.Fatalf("%d bytes of ciphertext, want %d", len(ct), EncryptedSize(int64(len(plain))))
				}
				got, err := Decrypt(ct, testKey)
				if err != nil || !bytes.Equal(got, plain) {
					t.Fatalf("ciphertext %d does not decrypt to the plaintext: %d bytes, %v", i, len(got), err)
				}
				cts[i] = ct
				all = append(all, ct)
			}
			if bytes.Equal(cts[0][:BlockSize], cts[1][:BlockSize]) {
				t.Errorf("the same IV twice: %x", cts[0][:BlockSize])
			}
			if bytes.Equal(cts[0][BlockSize:], cts[1][BlockSize:]) {
				t.Error("the same plaintext and key gave the same ciphertext twice")
			}
		})
	}
	// Nor do the three ways share an IV with one another.
	seen := make(map[string]bool)
	for _, ct := range all {
		iv := string(ct[:BlockSize])
		if seen[iv] {
			t.Errorf("IV %x used twice", iv)
		}
		seen[iv] = true
	}
}
