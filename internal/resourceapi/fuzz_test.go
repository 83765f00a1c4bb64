package resourceapi

import (
	"errors"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

// FuzzTokenClaims: any token the API could send is read or refused, never a panic; with a
// verification key, only a token signed with that key and issued by AzaionApi is accepted.
func FuzzTokenClaims(f *testing.F) {
	key := []byte(testSecret)
	sign := func(claims jwt.MapClaims, k []byte) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(k)
		if err != nil {
			f.Fatal(err)
		}
		return s
	}
	f.Add(sign(jwt.MapClaims{"nameid": "u1", "unique_name": "a@b", "role": "Admin", "iss": Issuer, "exp": 2e9, "iat": 1.9e9}, key))
	f.Add(sign(jwt.MapClaims{"role": []any{"Pilot", 40, nil, map[string]any{}}, "iss": Issuer}, key))
	f.Add(sign(jwt.MapClaims{"nameid": 1e300, "exp": "tomorrow", "iss": Issuer}, key))
	f.Add(sign(jwt.MapClaims{"iss": Issuer}, []byte("another key")))
	f.Add("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJpc3MiOiJBemFpb25BcGkifQ.")
	f.Add("a.b.c")
	f.Add("")
	strict, err := newVerifier(key)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		if info, err := (verifier{}).parse(raw); err == nil {
			if _, known := roleNames[info.user.Role]; !known {
				t.Fatalf("unknown role %v read from %q", info.user.Role, raw)
			}
		}
		if _, err := strict.parse(raw); err == nil {
			claims := jwt.MapClaims{}
			tok, err := jwt.NewParser(jwt.WithValidMethods([]string{"HS256", "HS384", "HS512"}), jwt.WithoutClaimsValidation()).
				ParseWithClaims(raw, claims, func(*jwt.Token) (any, error) { return key, nil })
			if err != nil || !tok.Valid {
				t.Fatalf("accepted %q, which does not verify: %v", raw, err)
			}
			if iss, _ := claims.GetIssuer(); iss != Issuer {
				t.Fatalf("accepted issuer %q", iss)
			}
		}
	})
}

// FuzzCDNYAML: decrypted cdn.yaml is read or refused with ErrUnavailable, never a panic, and a
// refusal never quotes the file (its values are keys).
func FuzzCDNYAML(f *testing.F) {
	f.Add([]byte("host: cdn.test:9000\ndownloader_access_key: k\ndownloader_access_secret: s\nuploader_access_key: k2\nuploader_access_secret: s2\n"))
	f.Add([]byte("host: [unclosed\ndownloader_access_secret: SECRETVALUE\n"))
	f.Add([]byte("downloader_access_key: k\n"))
	f.Add([]byte("host: &a [*a]\n"))
	f.Add([]byte("- 1\n- 2\n"))
	f.Add([]byte("host: !!binary aGVsbG8=\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, plain []byte) {
		cdn, err := parseCDN(plain)
		if err != nil {
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("error %v is not ErrUnavailable", err)
			}
			if msg := err.Error(); msg != ErrUnavailable.Error()+": not valid YAML" && msg != ErrUnavailable.Error()+": no host" {
				t.Fatalf("error %q says more than its fixed text", msg)
			}
			return
		}
		if cdn.Host == "" {
			t.Fatal("accepted a cdn.yaml without a host")
		}
	})
}
