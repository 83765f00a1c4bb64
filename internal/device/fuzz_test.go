package device

import (
	"strings"
	"testing"
)

// FuzzParse: any input is parsed or refused, never a panic, and a refusal never repeats the
// value of the password line.
func FuzzParse(f *testing.F) {
	f.Add([]byte("AZAION_DEVICE_EMAIL=a@b.c\nAZAION_DEVICE_PASSWORD=pw\n"))
	f.Add([]byte("# c\n; c\n AZAION_DEVICE_EMAIL = 'a' \r\nAZAION_DEVICE_PASSWORD=\"p\\\"w\"\n"))
	f.Add([]byte("AZAION_DEVICE_PASSWORD=\"unterminated\n"))
	f.Add([]byte("=\n==\n'\n\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		id, err := Parse(data)
		if err != nil {
			if id != (Identity{}) {
				t.Fatal("an error with an identity")
			}
			const marker = "ZZSECRETZZ"
			if !strings.Contains(string(data), marker) {
				_, err2 := Parse([]byte("AZAION_DEVICE_EMAIL=e\nAZAION_DEVICE_PASSWORD=" + marker + string(data)))
				if err2 != nil && strings.Contains(err2.Error(), marker) {
					t.Fatalf("error repeats the password: %q", err2)
				}
			}
			return
		}
		if id.Email == "" || id.Password == "" {
			t.Fatal("accepted an empty credential")
		}
	})
}
