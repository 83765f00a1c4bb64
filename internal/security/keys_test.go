package security

import (
	"encoding/hex"
	"testing"
)

// The expected values below were computed with openssl, independently of this package.
// h() is: h(){ printf %s "$1" | openssl dgst -sha384 -binary | base64; }

const (
	testHardware = "CPU: AMD EPYC. GPU: Unknown. Memory: 8 GB. DriveSerial: ßerial-№42"
	testEmail    = "user@azaion.com"
	testPassword = "пароль $ecret"
)

func TestHash(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		// h ''
		{"", "OLBgp1GsljhM2TJ+sbHjaiH9txEUvgdDTAzHv2P24donTt6/529l+9Ua0vFImLlb"},
		// h 'abc'
		{"abc", "ywB1P0WjXou1oD1pmsZQBycsMqsO3tFjGotgWkP/W+2AhgcroefMI1i67KE0yCWn"},
		// h 'Привіт, дрон! ✈ 日本'
		{"Привіт, дрон! ✈ 日本", "855JwigPY13mRArZRJqp9cDv1i8rYgi0A2NGDP8lRinr3ZPaaUbtpK167eixJxuO"},
	} {
		if got := Hash(tc.in); got != tc.want {
			t.Errorf("Hash(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

// HW='CPU: AMD EPYC. GPU: Unknown. Memory: 8 GB. DriveSerial: ßerial-№42'
// HH=$(h "Azaion_${HW}_%\$\$\$)0_")
const testHardwareHash = "BWggMP4rWpXdElrwsLE1kROngVcCYpoA4YRL7s6P5T1ff3+xbjQ/xHSrxixUU98d"

// h "user@azaion.com-пароль \$ecret-${HH}-#%@AzaionKey@%#---"
const testAPIKey = "qyBy7RXdHEa7w8lplsfdHH8X5zngEIgQRdja6y7oNosTyUaYoD3D3SqPQx8FEOc0"

func TestHardwareHash(t *testing.T) {
	if got := HardwareHash(testHardware); got != testHardwareHash {
		t.Errorf("HardwareHash = %s, want %s", got, testHardwareHash)
	}
}

func TestAPIKey(t *testing.T) {
	if got := APIKey(testEmail, testPassword, testHardwareHash); got != testAPIKey {
		t.Errorf("APIKey = %s, want %s", got, testAPIKey)
	}
}

func TestResourceKey(t *testing.T) {
	// h '-#%@AzaionKey@%#---234sdfklgvhjbnn'
	const want = "FIKO2j/w/e6TMjCpko/faQHbTGax37IectZtZSXQ+VcOmmcKD2OKjFAFDAI4iei/"
	if got := ResourceKey(); got != want {
		t.Errorf("ResourceKey = %s, want %s", got, want)
	}
}

func TestKeyFromString(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		// printf %s 'ключ' | openssl dgst -sha256 -r
		{"ключ", "1de36a32af798da0c1ac9297603a320ed8fe567cf21c9177112a4ce914ebb8be"},
		// printf %s 'qyBy7RXdHEa7w8lplsfdHH8X5zngEIgQRdja6y7oNosTyUaYoD3D3SqPQx8FEOc0' | openssl dgst -sha256 -r
		{testAPIKey, "e511180b813ba57ac2e3eca665b53d45f40b2b23030d6270bb7aaf35a42357d5"},
	} {
		if got := hex.EncodeToString(KeyFromString(tc.in)); got != tc.want {
			t.Errorf("KeyFromString(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestArchiveKey(t *testing.T) {
	// printf '\x00\xff\x10Azaion\x80' | openssl dgst -sha256 -r
	const want = "d076fbc3b0717336012ecfeed114904989351f8bdeda77c81909ae8aa2e1e785"
	if got := hex.EncodeToString(ArchiveKey([]byte("\x00\xff\x10Azaion\x80"))); got != want {
		t.Errorf("ArchiveKey = %s, want %s", got, want)
	}
}

func TestEncryptedSize(t *testing.T) {
	for _, tc := range []struct{ plain, want int64 }{
		{0, 32}, {1, 32}, {15, 32}, {16, 48}, {17, 48}, {4096, 4128}, {1<<20 + 3, 16 + 1<<20 + 16},
	} {
		if got := EncryptedSize(tc.plain); got != tc.want {
			t.Errorf("EncryptedSize(%d) = %d, want %d", tc.plain, got, tc.want)
		}
	}
}
