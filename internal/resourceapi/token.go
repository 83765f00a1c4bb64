package resourceapi

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Issuer is the "iss" a verified token must carry.
const Issuer = "AzaionApi"

// Claim names as ASP.NET writes them: JwtSecurityTokenHandler shortens the long URIs to
// nameid, unique_name and role, but a server configured otherwise sends the long forms.
var (
	idClaims    = []string{"nameid", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier"}
	emailClaims = []string{"unique_name", "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name", "email",
		"http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress"}
	roleClaims = []string{"role", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"}
)

// tokenInfo is what the loader reads from a token.
type tokenInfo struct {
	user     User
	expires  time.Time // zero if the token has no exp
	issuedAt time.Time // zero if the token has no iat
}

// verifier checks tokens against Options.VerifyKey; the zero value decodes without checking.
type verifier struct {
	key     any
	methods []string
}

func newVerifier(key any) (verifier, error) {
	var methods []string
	switch k := key.(type) {
	case nil:
		return verifier{}, nil
	case []byte:
		if len(k) == 0 {
			return verifier{}, errors.New("resourceapi: empty HMAC VerifyKey")
		}
		methods = []string{"HS256", "HS384", "HS512"}
	case *rsa.PublicKey:
		methods = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
	case *ecdsa.PublicKey:
		methods = []string{"ES256", "ES384", "ES512"}
	case ed25519.PublicKey:
		methods = []string{"EdDSA"}
	default:
		return verifier{}, fmt.Errorf("resourceapi: unsupported VerifyKey type %T", key)
	}
	return verifier{key: key, methods: methods}, nil
}

// parse reads the claims of raw. With a key it checks the signature, the algorithm family and
// the issuer, but not exp, nbf or iat: edge devices often run with a wrong clock, and a
// token fresh from the API must not be refused because of it (expiry is tracked on the
// device's own clock instead, see expiresLocally).
func (v verifier) parse(raw string) (tokenInfo, error) {
	claims := jwt.MapClaims{}
	var err error
	if v.key == nil {
		_, _, err = jwt.NewParser().ParseUnverified(raw, claims)
	} else {
		_, err = jwt.NewParser(jwt.WithValidMethods(v.methods), jwt.WithoutClaimsValidation()).
			ParseWithClaims(raw, claims, func(*jwt.Token) (any, error) { return v.key, nil })
		if err == nil {
			if iss, _ := claims.GetIssuer(); iss != Issuer {
				err = fmt.Errorf("issuer %q is not %q", iss, Issuer)
			}
		}
	}
	if err != nil {
		return tokenInfo{}, fmt.Errorf("invalid token: %w", err)
	}
	var info tokenInfo
	info.user.ID = claimString(claims, idClaims)
	info.user.Email = claimString(claims, emailClaims)
	info.user.Role = claimRole(claims)
	exp, err := claims.GetExpirationTime()
	if err != nil {
		return tokenInfo{}, fmt.Errorf("invalid token: %w", err)
	}
	if exp != nil {
		info.expires = exp.Time
	}
	if iat, err := claims.GetIssuedAt(); err == nil && iat != nil {
		info.issuedAt = iat.Time
	}
	return info, nil
}

// expiresLocally is when the token expires on this device's clock, given that it arrived at
// now. With iat the lifetime exp-iat is counted from arrival, so a device clock that is off
// neither renews on every call nor lets the token lapse; without iat exp is all there is.
func (t tokenInfo) expiresLocally(now time.Time) time.Time {
	if t.expires.IsZero() || t.issuedAt.IsZero() || !t.expires.After(t.issuedAt) {
		return t.expires
	}
	return now.Add(t.expires.Sub(t.issuedAt))
}

// claimString returns the first of names present, as a string.
func claimString(claims jwt.MapClaims, names []string) string {
	for _, name := range names {
		if s, ok := scalarString(claims[name]); ok && s != "" {
			return s
		}
	}
	return ""
}

// claimRole reads the role claim. ASP.NET writes a single role as a string and several as an
// array; the first role the loader knows wins.
func claimRole(claims jwt.MapClaims) Role {
	for _, name := range roleClaims {
		v, ok := claims[name]
		if !ok {
			continue
		}
		values, isList := v.([]any)
		if !isList {
			values = []any{v}
		}
		for _, v := range values {
			if s, ok := scalarString(v); ok {
				if r := ParseRole(s); r != None {
					return r
				}
			}
		}
	}
	return None
}

// scalarString formats a JSON string or number; other JSON values are not claim values here.
func scalarString(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), true
	case json.Number:
		return v.String(), true
	}
	return "", false
}
