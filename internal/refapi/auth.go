package refapi

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Token claims, as the real API issues them (SPEC §3).
const (
	Issuer   = "AzaionApi"
	Audience = "Annotators/OrangePi/Admins"
)

func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	f, status, err := readJSON(w, r, "email", "password")
	if err != nil {
		writeError(w, status, err.Error())
		return
	}
	if f["email"] == "" || f["password"] == "" {
		writeError(w, http.StatusBadRequest, "email and password are required")
		return
	}
	s.mu.Lock()
	u := s.users[f["email"]]
	var user User
	if u != nil {
		user = *u
	}
	gen := s.generation
	s.mu.Unlock()
	// One answer for an unknown user and a wrong password, so the API does not tell which
	// emails exist.
	if u == nil || !equal(user.Password, f["password"]) {
		writeError(w, http.StatusUnauthorized, "invalid email or password")
		return
	}
	token, err := s.issue(user, gen, s.now())
	if err != nil {
		writeError(w, http.StatusInternalServerError, "cannot issue token")
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"token": token})
}

// issue signs a token for u. The jti is "<generation>.<random>": RevokeTokens bumps the
// generation, which revokes every earlier token with sub-second precision (iat has whole
// seconds only, and a re-login right after a revocation must work) while the server keeps no
// per-token state.
func (s *Server) issue(u User, gen uint64, now time.Time) (string, error) {
	var nonce [8]byte
	rand.Read(nonce[:])
	claims := jwt.MapClaims{
		"nameid":      u.ID,
		"unique_name": u.Email,
		"role":        u.Role,
		"iss":         Issuer,
		"aud":         Audience,
		"iat":         jwt.NewNumericDate(now),
		"nbf":         jwt.NewNumericDate(now),
		"exp":         jwt.NewNumericDate(now.Add(s.lifetime)),
		"jti":         strconv.FormatUint(gen, 10) + "." + hex.EncodeToString(nonce[:]),
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(s.secret)
}

// authenticate returns a copy of the user the request's bearer token names, or answers 401.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (User, bool) {
	u, err := s.verify(r.Header.Get("Authorization"))
	if err != nil {
		// The reason goes to the client only (as ASP.NET's error_description does), never the
		// token itself.
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		writeError(w, http.StatusUnauthorized, err.Error())
		return User{}, false
	}
	return u, true
}

func (s *Server) verify(header string) (User, error) {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return User{}, errors.New("bearer token required")
	}
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(strings.TrimSpace(token), claims,
		func(*jwt.Token) (any, error) { return s.secret, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithIssuer(Issuer),
		jwt.WithAudience(Audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithTimeFunc(s.now),
	)
	if err != nil {
		if errors.Is(err, jwt.ErrTokenExpired) {
			return User{}, errors.New("token expired")
		}
		return User{}, errors.New("invalid token")
	}
	jti, _ := claims["jti"].(string)
	genText, _, _ := strings.Cut(jti, ".")
	gen, err := strconv.ParseUint(genText, 10, 64)
	if err != nil {
		return User{}, errors.New("invalid token")
	}
	id, _ := claims["nameid"].(string)

	s.mu.Lock()
	defer s.mu.Unlock()
	if gen < s.generation {
		return User{}, errors.New("token revoked")
	}
	u := s.byID[id]
	if u == nil {
		return User{}, errors.New("unknown user")
	}
	return *u, nil
}

func equal(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// maxJSON bounds JSON request bodies; the largest legitimate one is a few hundred bytes.
const maxJSON = 1 << 20

// readJSON reads a JSON object and returns the string values of the wanted fields, matching
// names case-insensitively as ASP.NET model binding does ("fileName", "filename" and
// "FileName" are one field). Absent and null fields are "". On failure it returns the status
// to answer with.
func readJSON(w http.ResponseWriter, r *http.Request, fields ...string) (map[string]string, int, error) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || !(mt == "application/json" || mt == "text/json" || strings.HasSuffix(mt, "+json")) {
		return nil, http.StatusUnsupportedMediaType, errors.New("content type must be application/json")
	}
	var raw map[string]json.RawMessage
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxJSON)).Decode(&raw); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, http.StatusBadRequest, errors.New("empty body")
		}
		return nil, http.StatusBadRequest, errors.New("body is not a JSON object")
	}
	if raw == nil { // the body was "null"
		return nil, http.StatusBadRequest, errors.New("body is not a JSON object")
	}
	out := make(map[string]string, len(fields))
	for _, f := range fields {
		var found json.RawMessage
		n := 0
		for k, v := range raw {
			if strings.EqualFold(k, f) {
				found = v
				n++
			}
		}
		if n > 1 {
			return nil, http.StatusBadRequest, fmt.Errorf("field %s given more than once", f)
		}
		if n == 0 {
			continue
		}
		var v *string
		if err := json.Unmarshal(found, &v); err != nil {
			return nil, http.StatusBadRequest, fmt.Errorf("field %s must be a string", f)
		}
		if v != nil {
			out[f] = *v
		}
	}
	return out, 0, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// writeError answers in ASP.NET's ProblemDetails shape. detail must never carry a secret.
func writeError(w http.ResponseWriter, status int, detail string) {
	w.Header().Set("Content-Type", "application/problem+json; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{
		"title":  http.StatusText(status),
		"status": status,
		"detail": detail,
	})
}
