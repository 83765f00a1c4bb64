package refapi

import (
	"bytes"
	"crypto/aes"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/azaion/loader/internal/testenv"
)

// Known answers for SPEC §4, computed with the openssl CLI (bash; the command is next to each
// value), never with this package: they pin the derivation to the SPEC, not to the code.

func TestHashKnownAnswers(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		// printf %s "" | openssl dgst -sha384 -binary | base64 -w0
		{"empty", "", "OLBgp1GsljhM2TJ+sbHjaiH9txEUvgdDTAzHv2P24donTt6/529l+9Ua0vFImLlb"},
		// printf %s '-#%@AzaionKey@%#---234sdfklgvhjbnn' | openssl dgst -sha384 -binary | base64 -w0
		{"resource key", "-#%@AzaionKey@%#---234sdfklgvhjbnn", "FIKO2j/w/e6TMjCpko/faQHbTGax37IectZtZSXQ+VcOmmcKD2OKjFAFDAI4iei/"},
	}
	for _, tt := range tests {
		if got := hashString(tt.in); got != tt.want {
			t.Errorf("%s: hash = %s, want %s", tt.name, got, tt.want)
		}
	}
}

func TestKeyDerivationKnownAnswers(t *testing.T) {
	tests := []struct {
		name                   string
		email, password, hw    string
		wantHWHash, wantAPIKey string
		wantAESKeyHex          string
	}{
		{
			name:     "jetson",
			email:    "operator@azaion.local",
			password: "S3cret!",
			hw:       "CPU: ARMv8 Processor rev 1 (v8l) x 12. GPU: Orin (nvgpu). Memory: 31.3 GB. DriveSerial: S6B0NL0T123456",
			// hw='CPU: ARMv8 Processor rev 1 (v8l) x 12. GPU: Orin (nvgpu). Memory: 31.3 GB. DriveSerial: S6B0NL0T123456'
			// hh=$(printf %s "Azaion_${hw}_%\$\$\$)0_" | openssl dgst -sha384 -binary | base64 -w0)
			wantHWHash: "wKiDNoLaCQS+JkTOkLjw4Lk/6KCUpIeiBYbUgjRrEdYqA8j1rb0mNQIbfGoKGhbk",
			// ak=$(printf %s "operator@azaion.local-S3cret!-${hh}-#%@AzaionKey@%#---" | openssl dgst -sha384 -binary | base64 -w0)
			wantAPIKey: "i4hSNKdZeqMxo+fmy274mbIB/RmdCsxL6EfjHw71G5XcdEcMsZs1mRX0RrvHd2W3",
			// printf %s "$ak" | openssl dgst -sha256 -binary | xxd -p -c64
			wantAESKeyHex: "7fcfae9c832eee354c266158414e64601da8e4f5da1b43253eaa02cffbe67dd4",
		},
		{
			// UTF-8 bytes, not UTF-16 or Latin-1, go into the hashes.
			name:     "non-ASCII credentials, unknown parts",
			email:    "пилот@azaion.local",
			password: "пароль ü",
			hw:       "CPU: Unknown. GPU: Unknown. Memory: Unknown. DriveSerial: Unknown",
			// hw='CPU: Unknown. GPU: Unknown. Memory: Unknown. DriveSerial: Unknown'
			// hh=$(printf %s "Azaion_${hw}_%\$\$\$)0_" | openssl dgst -sha384 -binary | base64 -w0)
			wantHWHash: "fmZXzD0rLxpgPUlpFwkgDZ4QpwX4+kzSZhYQZP84Fp0llSJpGeUeIG9HpNa3j0pt",
			// ak=$(printf %s "пилот@azaion.local-пароль ü-${hh}-#%@AzaionKey@%#---" | openssl dgst -sha384 -binary | base64 -w0)
			wantAPIKey: "kjE7/CRAA0r3wq8pHMg5+sqUDjjxK9NP+FDuQl/FM2yX1kThHwUZ5X1UCz86B1Rm",
			// printf %s "$ak" | openssl dgst -sha256 -binary | xxd -p -c64
			wantAESKeyHex: "d732d27a696665d315b6d89723ebf9599822dc6bf87600ae56af6e1f25a6af5c",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := hardwareHash(tt.hw); got != tt.wantHWHash {
				t.Errorf("hardwareHash = %s, want %s", got, tt.wantHWHash)
			}
			key := apiKey(tt.email, tt.password, tt.hw)
			if key != tt.wantAPIKey {
				t.Errorf("apiKey = %s, want %s", key, tt.wantAPIKey)
			}
			k := aesKey(key)
			if got := hex.EncodeToString(k[:]); got != tt.wantAESKeyHex {
				t.Errorf("aesKey = %s, want %s", got, tt.wantAESKeyHex)
			}
		})
	}
}

// TestEncryptStreamOpenSSL decrypts encryptStream's output with the openssl CLI, which checks
// the PKCS#7 padding, at sizes around the block and chunk boundaries.
func TestEncryptStreamOpenSSL(t *testing.T) {
	openssl := testenv.OpenSSL(t)
	const keyString = "i4hSNKdZeqMxo+fmy274mbIB/RmdCsxL6EfjHw71G5XcdEcMsZs1mRX0RrvHd2W3"
	// printf %s "$ak" | openssl dgst -sha256 -binary | xxd -p -c64   (the API key above)
	const keyHex = "7fcfae9c832eee354c266158414e64601da8e4f5da1b43253eaa02cffbe67dd4"
	for _, size := range []int{0, 1, 15, 16, 17, 5000, chunkSize - 1, chunkSize, chunkSize + 1, 3*chunkSize + 7} {
		plain := make([]byte, size)
		for i := range plain {
			plain[i] = byte(i*7 + i>>8)
		}
		var out bytes.Buffer
		if err := encryptStream(&out, bytes.NewReader(plain), keyString); err != nil {
			t.Fatal(err)
		}
		if int64(out.Len()) != encryptedSize(int64(size)) {
			t.Fatalf("size %d: output %d bytes, encryptedSize says %d", size, out.Len(), encryptedSize(int64(size)))
		}
		ct := out.Bytes()
		f := filepath.Join(t.TempDir(), "ct")
		if err := os.WriteFile(f, ct[aes.BlockSize:], 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := exec.Command(openssl, "enc", "-d", "-aes-256-cbc", "-K", keyHex,
			"-iv", hex.EncodeToString(ct[:aes.BlockSize]), "-in", f).Output()
		if err != nil {
			t.Fatalf("size %d: openssl: %v", size, err)
		}
		if !bytes.Equal(got, plain) {
			t.Fatalf("size %d: openssl decrypted %d bytes that differ from the plaintext", size, len(got))
		}
	}
}

func TestEncryptStreamFreshIV(t *testing.T) {
	var a, b bytes.Buffer
	encryptStream(&a, bytes.NewReader([]byte("x")), "k")
	encryptStream(&b, bytes.NewReader([]byte("x")), "k")
	if bytes.Equal(a.Bytes()[:aes.BlockSize], b.Bytes()[:aes.BlockSize]) {
		t.Fatal("two encryptions used the same IV")
	}
}

func TestValidName(t *testing.T) {
	for _, s := range []string{"models", "yolo.onnx.small", "cdn.yaml", "a b", "Ωmega"} {
		if !validName(s) {
			t.Errorf("validName(%q) = false", s)
		}
	}
	for _, s := range []string{"", ".", "..", ".hidden", "a/b", `a\b`, "a\x00b", "../x", strings.Repeat("a", 256)} {
		if validName(s) {
			t.Errorf("validName(%q) = true", s)
		}
	}
}
