package security

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/azaion/loader/internal/testenv"
)

// testKey and testIV make test ciphertexts deterministic.
var (
	testKey = KeyFromString("test key string")
	testIV  = []byte("0123456789abcdef")
)

// testSizes are the plaintext lengths every round trip is tried with.
var testSizes = []int{0, 1, 15, 16, 17, 4096, 1<<20 + 3}

// plaintext returns n bytes that never look like PKCS#7 padding (all above 16), so a
// ciphertext cut at a block boundary deterministically fails the padding check.
func plaintext(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(17 + i%239)
	}
	return p
}

// encryptIV is Encrypt with a given IV, written from the SPEC with crypto/cipher directly.
func encryptIV(plain, key, iv []byte) []byte {
	block, err := aes.NewCipher(key)
	if err != nil {
		panic(err)
	}
	padLen := BlockSize - len(plain)%BlockSize
	body := append(bytes.Clone(plain), bytes.Repeat([]byte{byte(padLen)}, padLen)...)
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(body, body)
	return append(bytes.Clone(iv), body...)
}

// opensslEnc encrypts plain with the openssl command and prepends the IV.
func opensslEnc(t testing.TB, plain, key, iv []byte) []byte {
	t.Helper()
	dir := t.TempDir()
	in, out := filepath.Join(dir, "plain"), filepath.Join(dir, "enc")
	writeFile(t, in, plain)
	runOpenSSL(t, "enc", "-aes-256-cbc", "-K", hex.EncodeToString(key), "-iv", hex.EncodeToString(iv), "-in", in, "-out", out)
	return append(bytes.Clone(iv), readFile(t, out)...)
}

// opensslDec decrypts IV ‖ ciphertext with the openssl command.
func opensslDec(t testing.TB, ct, key []byte) []byte {
	t.Helper()
	dir := t.TempDir()
	in, out := filepath.Join(dir, "enc"), filepath.Join(dir, "plain")
	writeFile(t, in, ct[BlockSize:])
	runOpenSSL(t, "enc", "-d", "-aes-256-cbc", "-K", hex.EncodeToString(key), "-iv", hex.EncodeToString(ct[:BlockSize]), "-in", in, "-out", out)
	return readFile(t, out)
}

func runOpenSSL(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command(testenv.OpenSSL(t), args...).CombinedOutput(); err != nil {
		t.Fatalf("openssl %s: %v\n%s", args[0], err, out)
	}
}

func writeFile(t testing.TB, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(name, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testKernel is a CBC kernel under test, with a name for messages.
type testKernel struct {
	name   string
	kernel *cbcKernel
}

// testKernels returns key's kernels that this build and CPU can run: crypto/cipher always,
// and the assembly kernel where it is supported.
func testKernels(t testing.TB, key []byte) []testKernel {
	t.Helper()
	std, err := newKernel(key, false)
	if err != nil {
		t.Fatal(err)
	}
	ks := []testKernel{{"crypto/cipher", std}}
	if asmSupported {
		asm, err := newKernel(key, true)
		if err != nil {
			t.Fatal(err)
		}
		if !asm.asm() {
			t.Fatal("newKernel(key, true) on a CPU with the AES instructions is not the assembly kernel")
		}
		ks = append(ks, testKernel{"asm", asm})
	}
	return ks
}
