package resources_test

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/azaion/loader/internal/security"
	"github.com/azaion/loader/internal/testenv"
)

// The resource key (SPEC §4) as openssl derives it, written down once from
//
//	K=$(printf %s '-#%@AzaionKey@%#---234sdfklgvhjbnn' | openssl dgst -sha384 -binary | openssl base64 -A)
//	printf %s "$K" | openssl dgst -sha256 -hex
//
// and derived again with openssl in the tests, so that a change on either side shows.
const (
	resourceKeyString = "FIKO2j/w/e6TMjCpko/faQHbTGax37IectZtZSXQ+VcOmmcKD2OKjFAFDAI4iei/"
	resourceKeyHex    = "822d0a253f9835112c8f7aaad5ce4b0776461d96baa63420095b3fb47a52b28e"
)

// runOpenSSL runs openssl with args and stdin and returns its output.
func runOpenSSL(t testing.TB, stdin []byte, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(testenv.OpenSSL(t), args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// opensslResourceKey derives the resource key with openssl and checks it against the KAT.
func opensslResourceKey(t testing.TB) string {
	t.Helper()
	digest := runOpenSSL(t, []byte("-#%@AzaionKey@%#---234sdfklgvhjbnn"), "dgst", "-sha384", "-binary")
	keyString := strings.TrimSpace(string(runOpenSSL(t, digest, "base64", "-A")))
	if keyString != resourceKeyString {
		t.Fatalf("openssl derives the key string %q, the KAT says %q", keyString, resourceKeyString)
	}
	out := strings.TrimSpace(string(runOpenSSL(t, []byte(keyString), "dgst", "-sha256", "-hex")))
	keyHex := out[strings.LastIndex(out, " ")+1:]
	if keyHex != resourceKeyHex {
		t.Fatalf("openssl derives the AES key %s, the KAT says %s", keyHex, resourceKeyHex)
	}
	if got := hex.EncodeToString(security.KeyFromString(security.ResourceKey())); got != keyHex {
		t.Fatalf("security derives the AES key %s, openssl %s", got, keyHex)
	}
	return keyHex
}

// opensslEncrypt is IV ‖ openssl's AES-256-CBC of plain under the resource key.
func opensslEncrypt(t testing.TB, keyHex string, plain []byte) []byte {
	t.Helper()
	iv := make([]byte, 16)
	_, _ = rand.Read(iv)
	in := filepath.Join(t.TempDir(), "plain")
	if err := os.WriteFile(in, plain, 0o600); err != nil {
		t.Fatal(err)
	}
	body := runOpenSSL(t, nil, "enc", "-aes-256-cbc", "-K", keyHex, "-iv", hex.EncodeToString(iv), "-in", in)
	return append(iv, body...)
}

// opensslDecrypt is openssl's decryption of IV ‖ AES-256-CBC under the resource key.
func opensslDecrypt(t testing.TB, keyHex string, c []byte) []byte {
	t.Helper()
	if len(c) < 16 {
		t.Fatalf("ciphertext of %d bytes", len(c))
	}
	in := filepath.Join(t.TempDir(), "cipher")
	if err := os.WriteFile(in, c[16:], 0o600); err != nil {
		t.Fatal(err)
	}
	return runOpenSSL(t, nil, "enc", "-d", "-aes-256-cbc", "-K", keyHex, "-iv", hex.EncodeToString(c[:16]), "-in", in)
}

// TestOpenSSLEncrypted: a resource encrypted by openssl and split by slicing, placed upstream
// past the loader, loads byte-identically, wherever it is split.
func TestOpenSSLEncrypted(t *testing.T) {
	t.Parallel()
	keyHex := opensslResourceKey(t)
	e := newEnv(t, envConfig{})
	s := e.service()
	for _, size := range []int{0, 1, 16, 3000, 100_003} {
		data := payload(size, uint64(1000+size))
		c := opensslEncrypt(t, keyHex, data)
		if int64(len(c)) != encryptedSize(int64(size)) {
			t.Fatalf("openssl wrote %d bytes for %d", len(c), size)
		}
		points := []int{0, 16, 100, 3072, int(splitSize(int64(len(c)))), len(c) - 16, len(c) - 1, len(c)}
		for _, n := range points {
			if n < 0 || n > len(c) {
				continue
			}
			name := fmt.Sprintf("ossl-%d-%d", size, n)
			e.putParts(e.folder, name, c[:n], c[n:])
			wantSame(t, name, s.read(t, e.folder, name), data)
		}
	}
}

// TestUploadDecryptsWithOpenSSL: what Upload stores, reassembled from the raw parts upstream,
// is what openssl decrypts to the original.
func TestUploadDecryptsWithOpenSSL(t *testing.T) {
	t.Parallel()
	keyHex := opensslResourceKey(t)
	e := newEnv(t, envConfig{})
	s := e.service()
	for i, size := range roundTripSizes {
		name := fmt.Sprintf("up-%d", size)
		data := payload(size, uint64(2000+i))
		s.upload(t, e.folder, name, data)
		small, big := e.rawParts(e.folder, name)
		wantSame(t, name, opensslDecrypt(t, keyHex, append(small, big...)), data)
	}
}
