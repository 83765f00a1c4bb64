package resourceapi

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/azaion/loader/internal/refapi"
	"github.com/azaion/loader/internal/security"
)

func TestParseRole(t *testing.T) {
	tests := []struct {
		in   string
		want Role
	}{
		{"None", None}, {"Operator", Operator}, {"operator", Operator}, {"VALIDATOR", Validator},
		{"CompanionPC", CompanionPC}, {"Admin", Admin}, {"ResourceUploader", ResourceUploader},
		{"ApiAdmin", ApiAdmin}, {" Admin ", Admin},
		{"10", Operator}, {"30", CompanionPC}, {"1000", ApiAdmin}, {"0", None},
		{"", None}, {"Root", None}, {"7", None}, {"-10", None}, {"10.5", None},
	}
	for _, tt := range tests {
		if got := ParseRole(tt.in); got != tt.want {
			t.Errorf("ParseRole(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
	for r, name := range roleNames {
		if r.String() != name || ParseRole(r.String()) != r {
			t.Errorf("%d: String %q does not round-trip", int(r), r.String())
		}
	}
	if got := Role(7).String(); got != "Role(7)" {
		t.Errorf("Role(7).String() = %q", got)
	}
}

func TestTokenClaims(t *testing.T) {
	const (
		longID    = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier"
		longName  = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"
		longRole  = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
		longEmail = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress"
	)
	tests := []struct {
		name   string
		claims jwt.MapClaims
		want   User
	}{
		{"short", jwt.MapClaims{"nameid": "u1", "unique_name": "a@b", "role": "Admin"}, User{"u1", "a@b", Admin}},
		{"long", jwt.MapClaims{longID: "u2", longName: "c@d", longRole: "ResourceUploader"}, User{"u2", "c@d", ResourceUploader}},
		{"email claim", jwt.MapClaims{"nameid": "u3", "email": "e@f", "role": "companionpc"}, User{"u3", "e@f", CompanionPC}},
		{"long email claim", jwt.MapClaims{"nameid": "u3", longEmail: "e@f"}, User{"u3", "e@f", None}},
		{"numeric role", jwt.MapClaims{"nameid": float64(42), "unique_name": "g@h", "role": float64(40)}, User{"42", "g@h", Admin}},
		{"numeric role string", jwt.MapClaims{"role": "1000"}, User{Role: ApiAdmin}},
		{"unknown role", jwt.MapClaims{"role": "Pilot"}, User{Role: None}},
		{"unknown number", jwt.MapClaims{"role": float64(5)}, User{Role: None}},
		{"role list", jwt.MapClaims{"role": []any{"Pilot", "Validator", "Admin"}}, User{Role: Validator}},
		{"no role", jwt.MapClaims{"nameid": "u4"}, User{ID: "u4"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := jwt.NewWithClaims(jwt.SigningMethodHS256, tt.claims).SignedString([]byte("k"))
			if err != nil {
				t.Fatal(err)
			}
			info, err := verifier{}.parse(raw)
			if err != nil {
				t.Fatal(err)
			}
			if info.user != tt.want {
				t.Errorf("user = %+v, want %+v", info.user, tt.want)
			}
		})
	}
}

func TestExpiresLocally(t *testing.T) {
	local := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	server := local.Add(-3 * time.Hour) // the device clock runs three hours ahead
	withIat := tokenInfo{issuedAt: server, expires: server.Add(4 * time.Hour)}
	if got, want := withIat.expiresLocally(local), local.Add(4*time.Hour); !got.Equal(want) {
		t.Errorf("with iat: %v, want %v", got, want)
	}
	noIat := tokenInfo{expires: server.Add(4 * time.Hour)}
	if got := noIat.expiresLocally(local); !got.Equal(noIat.expires) {
		t.Errorf("without iat: %v, want exp %v", got, noIat.expires)
	}
	if got := (tokenInfo{}).expiresLocally(local); !got.IsZero() {
		t.Errorf("without exp: %v, want zero", got)
	}
}

func TestLoginStoresSession(t *testing.T) {
	e := newEnv(t, Options{}, nil)
	if _, ok := e.client.Session(); ok {
		t.Fatal("Session ok before login")
	}
	if _, err := e.client.CDN(); !errors.Is(err, ErrNotLoggedIn) {
		t.Fatalf("CDN before login: %v", err)
	}
	e.login(t)
	user, ok := e.client.Session()
	if want := (User{ID: testUserID, Email: testEmail, Role: Operator}); !ok || user != want {
		t.Fatalf("Session = %+v, %v; want %+v", user, ok, want)
	}
	cdn, err := e.client.CDN()
	if err != nil || cdn != CDNSettings(testCDN) {
		t.Fatalf("CDN = %+v, %v; want %+v", cdn, err, testCDN)
	}
	if n := e.calls(refapi.EndpointGet); n != 1 {
		t.Errorf("cdn.yaml fetched %d times, want 1", n)
	}
}

// TestLoginLogsUserID: the log names the user by the token's nameid, never by the email
// (SPEC §7 counts the email as a credential), also when the client logs in again by itself.
func TestLoginLogsUserID(t *testing.T) {
	e := newEnv(t, Options{}, nil)
	e.login(t)
	e.ref.RevokeTokens()
	if _, err := e.client.KeyFragment(context.Background()); err != nil {
		t.Fatal(err)
	}
	logs := e.logs.String()
	for _, want := range []string{
		`msg="logged in to the resource API" user=user-1 role=Operator`,
		`msg="logging in to the resource API again" user=user-1`,
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log lacks %s:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, testEmail) {
		t.Errorf("the log names the email:\n%s", logs)
	}
}

func TestLoginRejected(t *testing.T) {
	// Any 4xx but 408 and 429 means "not these credentials".
	for _, status := range []int{400, 401, 403, 404, 409} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			e := newEnv(t, Options{}, nil)
			e.ref.SetFault(refapi.EndpointLogin, status, 1)
			err := e.client.Login(context.Background(), testEmail, testPassword)
			if !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("err = %v, want ErrUnauthorized", err)
			}
			if _, ok := e.client.Session(); ok {
				t.Error("a failed login left a session")
			}
		})
	}
	for _, c := range []struct{ name, email, password string }{
		{"wrong password", testEmail, "wrong"},
		{"unknown user", "nobody@azaion.test", testPassword},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, Options{}, nil)
			err := e.client.Login(context.Background(), c.email, c.password)
			if !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("err = %v, want ErrUnauthorized", err)
			}
			if !strings.Contains(err.Error(), "invalid email or password") {
				t.Errorf("err = %q, want the API's reason", err)
			}
		})
	}
	t.Run("empty password", func(t *testing.T) {
		e := newEnv(t, Options{}, nil)
		if err := e.client.Login(context.Background(), testEmail, ""); !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("err = %v, want ErrUnauthorized", err)
		}
		if n := e.calls(refapi.EndpointLogin); n != 0 {
			t.Errorf("empty password sent upstream %d times", n)
		}
	})
}

func TestLoginUnavailable(t *testing.T) {
	answer := func(status int, contentType, body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", contentType)
			w.WriteHeader(status)
			io.WriteString(w, body)
		}
	}
	tests := []struct {
		name    string
		handler http.HandlerFunc
	}{
		{"500", answer(500, "text/plain", "boom")},
		{"503", answer(503, "text/html", "<html>down</html>")},
		{"429", answer(429, "text/plain", "slow down")},
		{"garbage", answer(200, "text/html", "<html>captive portal</html>")},
		{"no token", answer(200, "application/json", `{"jwt":"x"}`)},
		{"token not a JWT", answer(200, "application/json", `{"token":"not.a.jwt"}`)},
		{"token not three parts", answer(200, "application/json", `{"token":"abc"}`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.handler)
			defer srv.Close()
			c, err := New(srv.URL, testHardware, Options{})
			if err != nil {
				t.Fatal(err)
			}
			err = c.Login(context.Background(), testEmail, testPassword)
			if !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrUnauthorized) {
				t.Fatalf("err = %v, want ErrUnavailable only", err)
			}
		})
	}
	t.Run("closed port", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		c, err := New("http://"+addr, testHardware, Options{})
		if err != nil {
			t.Fatal(err)
		}
		err = c.Login(context.Background(), testEmail, testPassword)
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("err = %v, want ErrUnavailable", err)
		}
		if !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("err = %q, want the cause named", err)
		}
	})
}

func TestLoginCDNFailures(t *testing.T) {
	notYAML := func(w http.ResponseWriter, r *http.Request, ref http.Handler) {
		if r.URL.Path == "/resources/get" { // only cdn.yaml lives at the top level
			w.Write(specEncrypt([]byte("host: [unclosed"), specAPIKey(testEmail, testPassword, testHardware)))
			return
		}
		ref.ServeHTTP(w, r)
	}
	tests := []struct {
		name  string
		setup func(*env)
		want  error
	}{
		{"cdn.yaml missing", func(e *env) { e.ref.SetFault(refapi.EndpointGet, 404, 1) }, ErrUnavailable},
		{"cdn.yaml forbidden", func(e *env) { e.ref.SetFault(refapi.EndpointGet, 403, 1) }, ErrForbidden},
		{"hardware bound to another device", func(e *env) { e.ref.SetHardware(testEmail, "CPU: another device") }, ErrForbidden},
		{"cdn.yaml 401", func(e *env) { e.ref.SetFault(refapi.EndpointGet, 401, 1) }, ErrUnauthorized},
		{"cdn.yaml 500", func(e *env) { e.ref.SetFault(refapi.EndpointGet, 500, 1) }, ErrUnavailable},
		{"cdn.yaml not YAML", func(e *env) { e.setFault(notYAML) }, ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, Options{}, nil)
			tt.setup(e)
			err := e.client.Login(context.Background(), testEmail, testPassword)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if _, ok := e.client.Session(); ok {
				t.Error("a failed login left a session")
			}
			if n := e.calls(refapi.EndpointLogin); n != 1 {
				t.Errorf("%d logins, want 1 (no retry inside Login)", n)
			}
		})
	}
	t.Run("cdn.yaml without host", func(t *testing.T) {
		e := newEnv(t, Options{}, func(c *refapi.Config) { c.CDN.Host = "" })
		if err := e.client.Login(context.Background(), testEmail, testPassword); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "no host") {
			t.Fatalf("err = %v, want ErrUnavailable saying there is no host", err)
		}
	})
	t.Run("cdn.yaml encrypted with another key", func(t *testing.T) {
		e := newEnv(t, Options{}, nil)
		// The client sends the right fingerprint but derives its key from another one.
		e.client.hardwareHash = security.HardwareHash("not this device")
		err := e.client.Login(context.Background(), testEmail, testPassword)
		if !errors.Is(err, ErrUnavailable) || !errors.Is(err, security.ErrWrongKey) {
			t.Fatalf("err = %v, want ErrUnavailable and security.ErrWrongKey", err)
		}
	})
}

// A failed Login leaves the client as it was: a mistyped password or a network failure does
// not log a working device out.
func TestFailedLoginKeepsSession(t *testing.T) {
	e := newEnv(t, Options{}, nil)
	e.login(t)
	if err := e.client.Login(context.Background(), "someone@else", "wrong"); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("err = %v, want ErrUnauthorized", err)
	}
	e.ref.SetFault(refapi.EndpointLogin, 503, 1)
	if err := e.client.Login(context.Background(), testEmail, testPassword); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if u, ok := e.client.Session(); !ok || u.Email != testEmail {
		t.Fatalf("Session = %+v, %v; want the first login's", u, ok)
	}
	putResource(t, e, "models", "a", "A")
	if _, err := e.client.GetResource(context.Background(), "models", "a"); err != nil {
		t.Fatalf("GetResource after failed logins: %v", err)
	}
	if n := e.calls(refapi.EndpointLogin); n != 3 {
		t.Errorf("%d logins, want 3 (the old session's token still works)", n)
	}
}

func putResource(t *testing.T, e *env, folder, name, content string) {
	t.Helper()
	if err := e.ref.PutResource(folder, name, strings.NewReader(content)); err != nil {
		t.Fatal(err)
	}
}

func TestNotLoggedIn(t *testing.T) {
	e := newEnv(t, Options{}, nil)
	ctx := context.Background()
	_, err1 := e.client.GetResource(ctx, "models", "a")
	_, err2 := e.client.ListResources(ctx, "models")
	_, err3 := e.client.KeyFragment(ctx)
	err4 := e.client.UploadResource(ctx, "models", "a", strings.NewReader("x"))
	for i, err := range []error{err1, err2, err3, err4} {
		if !errors.Is(err, ErrNotLoggedIn) {
			t.Errorf("call %d: err = %v, want ErrNotLoggedIn", i+1, err)
		}
	}
	for _, ep := range []string{refapi.EndpointLogin, refapi.EndpointGet, refapi.EndpointList, refapi.EndpointKeyFragment, refapi.EndpointUpload} {
		if n := e.calls(ep); n != 0 {
			t.Errorf("%d calls reached %s", n, ep)
		}
	}
}

func TestGetResource(t *testing.T) {
	e := newEnv(t, Options{}, nil)
	e.login(t)
	want := bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef, 0}, 1000)
	putResource(t, e, "models", "a.small", string(want))
	got, err := e.client.GetResource(context.Background(), "models", "a.small")
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("GetResource = %d bytes, %v", len(got), err)
	}
	// The empty folder is the API's top level: POST /resources/get.
	putResource(t, e, "", "top.txt", "top")
	if got, err := e.client.GetResource(context.Background(), "", "top.txt"); err != nil || string(got) != "top" {
		t.Fatalf("GetResource top level = %q, %v", got, err)
	}
	if _, err := e.client.GetResource(context.Background(), "models", "missing"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing: err = %v, want ErrNotFound", err)
	} else if !strings.HasPrefix(err.Error(), "get models/missing: ") {
		t.Errorf("err = %q, want the call named", err)
	}
	if n := e.calls(refapi.EndpointLogin); n != 1 {
		t.Errorf("%d logins, want 1 (404 needs no re-login)", n)
	}
}

func TestGetResourceWrongKey(t *testing.T) {
	e := newEnv(t, Options{}, nil)
	e.login(t)
	// Decryption fails when the server encrypts with another key: swap the client's key.
	e.client.mu.Lock()
	s := *e.client.sess
	s.apiKey = security.KeyFromString("another key")
	e.client.sess = &s
	e.client.mu.Unlock()
	putResource(t, e, "models", "a", "A")
	// CBC checks only the padding: one wrong key in 256 or so still yields valid padding (the
	// API encrypts with a fresh IV each time), so three tries, of which one at least must fail.
	wrongKey := 0
	for range 3 {
		got, err := e.client.GetResource(context.Background(), "models", "a")
		switch {
		case errors.Is(err, security.ErrWrongKey) && !errors.Is(err, ErrUnavailable):
			wrongKey++
		case err != nil:
			t.Fatalf("err = %v, want security.ErrWrongKey", err)
		case string(got) == "A":
			t.Fatal("decrypted with the wrong key")
		}
	}
	if wrongKey == 0 {
		t.Fatal("three decryptions with a wrong key gave no security.ErrWrongKey")
	}
}

func TestStatusMapping(t *testing.T) {
	tests := []struct {
		status     int
		want       error
		logins     int // including the first
		attempts   int
		retryFails bool
	}{
		{404, ErrNotFound, 1, 1, false},
		{500, ErrUnavailable, 1, 1, false},
		{502, ErrUnavailable, 1, 1, false},
		{400, ErrUnavailable, 1, 1, false},
		{401, ErrUnauthorized, 2, 2, true},
		{403, ErrForbidden, 2, 2, true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.status), func(t *testing.T) {
			e := newEnv(t, Options{}, nil)
			e.login(t)
			putResource(t, e, "models", "a", "A")
			n := 1
			if tt.retryFails {
				n = 2 // the repeat after the re-login fails too
			}
			e.ref.SetFault(refapi.EndpointGet, tt.status, n)
			_, err := e.client.GetResource(context.Background(), "models", "a")
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if got := e.calls(refapi.EndpointLogin); got != tt.logins {
				t.Errorf("%d logins, want %d", got, tt.logins)
			}
			// The re-login fetches no cdn.yaml: every get after the first is an attempt.
			if got := e.calls(refapi.EndpointGet) - 1; got != tt.attempts {
				t.Errorf("%d attempts, want %d", got, tt.attempts)
			}
		})
	}
}

// A 401 or 403 once: one re-login, one repeat, and the caller sees success.
func TestRetryAfterRefusal(t *testing.T) {
	for _, status := range []int{401, 403} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			e := newEnv(t, Options{}, nil)
			e.login(t)
			putResource(t, e, "models", "a", "A")
			e.ref.SetFault(refapi.EndpointGet, status, 1)
			got, err := e.client.GetResource(context.Background(), "models", "a")
			if err != nil || string(got) != "A" {
				t.Fatalf("GetResource = %q, %v", got, err)
			}
			if n := e.calls(refapi.EndpointLogin); n != 2 {
				t.Errorf("%d logins, want 2", n)
			}
			if n := e.calls(refapi.EndpointGet) - 1; n != 2 {
				t.Errorf("%d attempts, want 2", n)
			}
		})
	}
	t.Run("revoked token", func(t *testing.T) {
		e := newEnv(t, Options{}, nil)
		e.login(t)
		e.ref.RevokeTokens()
		for range 2 {
			if got, err := e.client.KeyFragment(context.Background()); err != nil || string(got) != "key-fragment-bytes" {
				t.Fatalf("KeyFragment = %q, %v", got, err)
			}
		}
		if n := e.calls(refapi.EndpointLogin); n != 2 {
			t.Errorf("%d logins, want 2: the new token is kept", n)
		}
		if n := e.calls(refapi.EndpointKeyFragment); n != 3 {
			t.Errorf("%d key fragment calls, want 3 (one refused, one repeated, one more)", n)
		}
	})
	t.Run("re-login rejected", func(t *testing.T) {
		e := newEnv(t, Options{}, nil)
		e.login(t)
		e.ref.RevokeTokens()
		e.ref.SetFault(refapi.EndpointLogin, 401, 1)
		_, err := e.client.ListResources(context.Background(), "models")
		if !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("err = %v, want ErrUnauthorized", err)
		}
		if n := e.calls(refapi.EndpointList); n != 1 {
			t.Errorf("%d attempts, want 1: no repeat without a new token", n)
		}
	})
	t.Run("hardware bound to another device", func(t *testing.T) {
		// A new login does not help: the API refuses again, and that is final.
		e := newEnv(t, Options{}, nil)
		e.login(t)
		e.ref.SetHardware(testEmail, "CPU: another device")
		_, err := e.client.GetResource(context.Background(), "", "cdn.yaml")
		if !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), "hardware mismatch") {
			t.Fatalf("err = %v, want ErrForbidden with the API's reason", err)
		}
		if n := e.calls(refapi.EndpointLogin); n != 2 {
			t.Errorf("%d logins, want 2 (one re-login for the refused call)", n)
		}
	})
}

// TestRenewBeforeExpiry: the client logs in again a minute (RenewBefore) before its token
// expires, so no call is refused for an expired token. The reference API and the client share
// a clock that the test moves: the token is at its expiry when the test says, no sleep.
func TestRenewBeforeExpiry(t *testing.T) {
	e := newEnv(t, Options{}, nil)
	e.login(t)
	first := e.token()
	list := func() {
		t.Helper()
		if _, err := e.client.ListResources(context.Background(), "models"); err != nil {
			t.Fatal(err)
		}
	}

	e.clock.Advance(4*time.Hour - DefaultRenewBefore - time.Second) // a second before renewing
	list()
	if n := e.calls(refapi.EndpointLogin); n != 1 {
		t.Fatalf("%d logins before the renewal time, want 1", n)
	}
	e.clock.Advance(2 * time.Second) // within RenewBefore of exp: the token is still valid
	list()
	if n := e.calls(refapi.EndpointLogin); n != 2 {
		t.Fatalf("%d logins within RenewBefore of expiry, want 2", n)
	}
	if n, refused := e.calls(refapi.EndpointList), e.refusedWith(first); n != 2 || refused {
		t.Errorf("%d list calls (want 2) and the old token refused: %v; want it renewed before the call", n, refused)
	}

	// Past the first token's expiry: the API refuses it now, and the client no longer needs it.
	e.clock.Advance(DefaultRenewBefore)
	if !e.refusedWith(first) {
		t.Fatal("the reference API still takes the first token after its expiry: the test proves nothing")
	}
	list()
	if n := e.calls(refapi.EndpointLogin); n != 2 {
		t.Errorf("%d logins, want still 2: the new token is good for 4 h", n)
	}
	if n := e.calls(refapi.EndpointList); n != 3 {
		t.Errorf("%d list calls, want 3: none refused and repeated", n)
	}
}

// token is the client's current token.
func (e *env) token() string {
	e.client.mu.Lock()
	defer e.client.mu.Unlock()
	return e.client.sess.token
}

// refusedWith reports whether the reference API refuses token now (it checks expiry on the
// shared clock). The probe goes past the counters' endpoint: it asks GET /resources/list/.
func (e *env) refusedWith(token string) bool {
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/binary-split/key-fragment", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	rec := httptest.NewRecorder()
	e.ref.ServeHTTP(rec, req)
	return rec.Code == http.StatusUnauthorized
}

// A device clock far off the server's must neither renew on every call nor let tokens lapse.
func TestRenewWithSkewedClock(t *testing.T) {
	serverClock := newClock()
	serverClock.Advance(-5 * time.Hour) // the server is 5 h behind the device
	e := newEnv(t, Options{}, func(c *refapi.Config) { c.Now = serverClock.Now })
	e.login(t)
	for range 3 {
		if _, err := e.client.ListResources(context.Background(), "models"); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.calls(refapi.EndpointLogin); n != 1 {
		t.Errorf("%d logins, want 1", n)
	}
	e.clock.Advance(4 * time.Hour)
	serverClock.Advance(4 * time.Hour)
	if _, err := e.client.ListResources(context.Background(), "models"); err != nil {
		t.Fatal(err)
	}
	if n := e.calls(refapi.EndpointLogin); n != 2 {
		t.Errorf("%d logins, want 2 after the token's lifetime", n)
	}
	if n := e.calls(refapi.EndpointList); n != 4 {
		t.Errorf("%d list calls, want 4: none refused", n)
	}
}

// A token without iat that has expired by this device's clock is used until the API refuses it,
// rather than renewed on every call. The reference API always sends iat: a fault takes it out.
func TestExpiredOnArrival(t *testing.T) {
	serverClock := newClock()
	serverClock.Advance(-10 * time.Hour) // the device clock is 10 h ahead
	e := newEnv(t, Options{}, func(c *refapi.Config) { c.Now = serverClock.Now })
	e.setFault(editTokens(t, func(c jwt.MapClaims) { delete(c, "iat") }))
	e.login(t)
	for range 3 {
		if _, err := e.client.ListResources(context.Background(), "models"); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.calls(refapi.EndpointLogin); n != 1 {
		t.Errorf("%d logins, want 1", n)
	}
	e.ref.RevokeTokens()
	if _, err := e.client.ListResources(context.Background(), "models"); err != nil {
		t.Fatal(err)
	}
	if n := e.calls(refapi.EndpointLogin); n != 2 {
		t.Errorf("%d logins, want 2 after a 401", n)
	}
}

// A failed renewal ahead of expiry does not fail a call the current token can still do.
func TestRenewFailureWhileTokenValid(t *testing.T) {
	e := newEnv(t, Options{}, nil)
	e.login(t)
	e.clock.Advance(4*time.Hour - 30*time.Second)
	e.ref.SetFault(refapi.EndpointLogin, 503, 1)
	if _, err := e.client.ListResources(context.Background(), "models"); err != nil {
		t.Fatalf("ListResources with a still valid token: %v", err)
	}
	if !strings.Contains(e.logs.String(), "renewing the resource API token failed") {
		t.Error("the failed renewal was not logged")
	}
	e.clock.Advance(time.Minute) // now past exp
	e.ref.SetFault(refapi.EndpointLogin, 503, 1)
	if _, err := e.client.ListResources(context.Background(), "models"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable once the token has expired", err)
	}
}

func TestConcurrentRenewal(t *testing.T) {
	t.Run("expiry", func(t *testing.T) {
		e := newEnv(t, Options{}, nil)
		e.login(t)
		putResource(t, e, "models", "a", "A")
		e.clock.Advance(5 * time.Hour)
		runConcurrently(t, 50, func() error {
			_, err := e.client.GetResource(context.Background(), "models", "a")
			return err
		})
		if n := e.calls(refapi.EndpointLogin); n != 2 {
			t.Errorf("%d logins, want 2", n)
		}
	})
	t.Run("401", func(t *testing.T) {
		e := newEnv(t, Options{}, nil)
		e.login(t)
		putResource(t, e, "models", "a", "A")
		e.ref.RevokeTokens()
		runConcurrently(t, 50, func() error {
			_, err := e.client.GetResource(context.Background(), "models", "a")
			return err
		})
		if n := e.calls(refapi.EndpointLogin); n != 2 {
			t.Errorf("%d logins, want 2", n)
		}
	})
}

func runConcurrently(t *testing.T, n int, f func() error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-start
			errs <- f()
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

// One caller giving up must not fail the others waiting on the same re-login: the first
// caller starts the re-login and gives up while it is under way and the second caller waits
// on it too; the re-login then succeeds and serves the second caller.
func TestRenewalSurvivesCallerCancel(t *testing.T) {
	e := newEnv(t, Options{}, nil)
	e.login(t)
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	e.setFault(func(w http.ResponseWriter, r *http.Request, ref http.Handler) {
		if r.URL.Path == "/login" {
			entered <- struct{}{}
			<-release
		}
		ref.ServeHTTP(w, r)
	})
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	e.clock.Advance(5 * time.Hour)

	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, err := e.client.KeyFragment(ctx)
		first <- err
	}()
	select {
	case <-entered: // the first caller's re-login reached the API, and waits there
	case err := <-first:
		t.Fatalf("the first caller returned before logging in again: %v", err)
	}

	waiting := newDoneWatcher()
	second := make(chan error, 1)
	go func() {
		_, err := e.client.KeyFragment(waiting)
		second <- err
	}()
	select {
	case <-waiting.watched: // the second caller is waiting on something it could give up on
	case err := <-second:
		t.Fatalf("the second caller returned while the re-login was held: %v", err)
	}

	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller: err = %v, want context.Canceled", err)
	}
	select {
	case err := <-second:
		t.Fatalf("the other caller returned before the re-login ended: %v", err)
	default:
	}
	released = true
	close(release)
	if err := <-second; err != nil {
		t.Fatalf("other caller: %v", err)
	}
	if n := e.calls(refapi.EndpointLogin); n != 2 {
		t.Errorf("%d logins, want 2 (the first and one shared re-login)", n)
	}
	select {
	case <-entered:
		t.Error("the cancelled caller's re-login was repeated")
	default:
	}
}

// doneWatcher is a context that is never cancelled and closes watched the first time its Done
// channel is asked for: a caller blocks on ctx.Done only when it has nothing else to do but wait.
type doneWatcher struct {
	context.Context
	once    sync.Once
	watched chan struct{}
}

func newDoneWatcher() *doneWatcher {
	return &doneWatcher{Context: context.Background(), watched: make(chan struct{})}
}

func (w *doneWatcher) Done() <-chan struct{} {
	w.once.Do(func() { close(w.watched) })
	return w.Context.Done()
}

func TestHeaderTimeout(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-block }))
	defer srv.Close()
	defer close(block)
	c, err := New(srv.URL, testHardware, Options{HeaderTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = c.Login(context.Background(), testEmail, testPassword)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %v, want about 300ms", d)
	}
}

func TestBodyStall(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		w.Write([]byte(`{"token":`))
		w.(http.Flusher).Flush()
		<-block
	}))
	defer srv.Close()
	defer close(block)
	c, err := New(srv.URL, testHardware, Options{HeaderTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = c.Login(context.Background(), testEmail, testPassword)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "stalled") {
		t.Fatalf("err = %v, want ErrUnavailable naming the stall", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %v, want about 300ms", d)
	}
}

func TestContextCancel(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-block }))
	defer srv.Close()
	defer close(block)
	c, err := New(srv.URL, testHardware, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = c.Login(ctx, testEmail, testPassword)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want DeadlineExceeded and ErrUnavailable", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %v", d)
	}
}

func TestSizeLimits(t *testing.T) {
	e := newEnv(t, Options{}, nil)
	e.login(t)
	e.ref.SetKeyFragment(make([]byte, MaxKeyFragmentSize+1))
	if _, err := e.client.KeyFragment(context.Background()); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("oversized fragment: err = %v", err)
	}
	e.ref.SetKeyFragment(nil)
	if _, err := e.client.KeyFragment(context.Background()); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("empty fragment: err = %v", err)
	}
	e.ref.SetKeyFragment(make([]byte, MaxKeyFragmentSize))
	if got, err := e.client.KeyFragment(context.Background()); err != nil || len(got) != MaxKeyFragmentSize {
		t.Fatalf("fragment at the limit: %d bytes, %v", len(got), err)
	}
	// Without Content-Length the cap holds too.
	e.setFault(func(w http.ResponseWriter, r *http.Request, _ http.Handler) {
		w.(http.Flusher).Flush() // chunked
		w.Write(make([]byte, MaxKeyFragmentSize+1))
	})
	if _, err := e.client.KeyFragment(context.Background()); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("oversized chunked fragment: err = %v", err)
	}
	// A declared length over the cap is refused before reading.
	e.setFault(func(w http.ResponseWriter, r *http.Request, _ http.Handler) {
		w.Header().Set("Content-Length", fmt.Sprint(MaxResourceSize+1))
		w.Write([]byte("x"))
	})
	if _, err := e.client.GetResource(context.Background(), "models", "huge"); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("oversized resource: err = %v", err)
	}
}

func TestListResources(t *testing.T) {
	e := newEnv(t, Options{}, nil)
	e.login(t)
	got, err := e.client.ListResources(context.Background(), "models")
	if err != nil || got == nil || len(got) != 0 {
		t.Fatalf("empty folder: %#v, %v", got, err)
	}
	putResource(t, e, "models", "b.small", "")
	putResource(t, e, "models", "a.small", "")
	got, err = e.client.ListResources(context.Background(), "models")
	if err != nil || !slices.Equal(got, []string{"a.small", "b.small"}) {
		t.Fatalf("ListResources = %v, %v", got, err)
	}
	e.setFault(func(w http.ResponseWriter, r *http.Request, _ http.Handler) { io.WriteString(w, `{"a":1}`) })
	if _, err := e.client.ListResources(context.Background(), "models"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("not a list: err = %v", err)
	}
}

func TestUploadResource(t *testing.T) {
	e := newEnv(t, Options{}, nil)
	e.login(t)
	data := bytes.Repeat([]byte{0, 1, 2, 0xff}, 1000)
	r := bytes.NewReader(append([]byte("skipped"), data...))
	r.Seek(int64(len("skipped")), io.SeekStart) // uploads from the current offset
	if err := e.client.UploadResource(context.Background(), "models", "a.small", r); err != nil {
		t.Fatal(err)
	}
	if cl := e.lastUploadLength(); cl <= int64(len(data)) {
		t.Errorf("Content-Length = %d, want the exact multipart length", cl)
	}
	names, err := e.client.ListResources(context.Background(), "models")
	if err != nil || !slices.Equal(names, []string{"a.small"}) {
		t.Fatalf("ListResources after upload = %v, %v", names, err)
	}
	// What the API stored comes back, encrypted for this device, and decrypts to the upload.
	got, err := e.client.GetResource(context.Background(), "models", "a.small")
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("GetResource after upload = %d bytes, %v; want %d", len(got), err, len(data))
	}
}

// A refused upload is sent again in full after the re-login, even when the server answered
// before reading the body.
func TestUploadRetrySendsBodyAgain(t *testing.T) {
	e := newEnv(t, Options{}, nil)
	e.login(t)
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB: more than socket buffers
	e.ref.RevokeTokens()
	if err := e.client.UploadResource(context.Background(), "models", "big", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if got, err := e.client.GetResource(context.Background(), "models", "big"); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("stored %d bytes (%v), want %d", len(got), err, len(data))
	}
	if n := e.calls(refapi.EndpointUpload); n != 2 {
		t.Errorf("%d attempts, want 2", n)
	}
	e.ref.SetFault(refapi.EndpointUpload, 403, 2)
	if err := e.client.UploadResource(context.Background(), "models", "big", bytes.NewReader(data)); !errors.Is(err, ErrForbidden) {
		t.Fatalf("err = %v, want ErrForbidden", err)
	}
}

func TestUploadSeekError(t *testing.T) {
	e := newEnv(t, Options{}, nil)
	e.login(t)
	err := e.client.UploadResource(context.Background(), "models", "a", badSeeker{})
	if err == nil || errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want the seek error", err)
	}
	if n := e.calls(refapi.EndpointUpload); n != 0 {
		t.Errorf("%d uploads reached the API", n)
	}
}

type badSeeker struct{ io.Reader }

func (badSeeker) Seek(int64, int) (int64, error) { return 0, errors.New("not seekable") }

func TestVerifyKey(t *testing.T) {
	t.Run("good signature", func(t *testing.T) {
		e := newEnv(t, Options{VerifyKey: []byte(testSecret)}, nil)
		e.login(t)
	})
	t.Run("bad signature", func(t *testing.T) {
		e := newEnv(t, Options{VerifyKey: []byte("another secret")}, nil)
		err := e.client.Login(context.Background(), testEmail, testPassword)
		if !errors.Is(err, ErrUnavailable) || !errors.Is(err, jwt.ErrTokenSignatureInvalid) {
			t.Fatalf("err = %v, want ErrUnavailable with an invalid signature", err)
		}
	})
	t.Run("wrong issuer", func(t *testing.T) {
		e := newEnv(t, Options{VerifyKey: []byte(testSecret)}, nil)
		e.setFault(editTokens(t, func(c jwt.MapClaims) { c["iss"] = "SomeoneElse" }))
		err := e.client.Login(context.Background(), testEmail, testPassword)
		if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "issuer") {
			t.Fatalf("err = %v, want ErrUnavailable naming the issuer", err)
		}
	})
	t.Run("no issuer", func(t *testing.T) {
		e := newEnv(t, Options{VerifyKey: []byte(testSecret)}, nil)
		e.setFault(editTokens(t, func(c jwt.MapClaims) { delete(c, "iss") }))
		if err := e.client.Login(context.Background(), testEmail, testPassword); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("err = %v, want ErrUnavailable", err)
		}
	})
	t.Run("unverified accepts any issuer", func(t *testing.T) {
		// The reference API would refuse such a token for cdn.yaml: the parser alone is asked.
		raw, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"iss": "SomeoneElse", "nameid": "u"}).SignedString([]byte("k"))
		if err != nil {
			t.Fatal(err)
		}
		if info, err := (verifier{}).parse(raw); err != nil || info.user.ID != "u" {
			t.Fatalf("parse = %+v, %v", info, err)
		}
	})
	t.Run("expired token still accepted when the clock is off", func(t *testing.T) {
		serverClock := newClock()
		serverClock.Advance(-10 * time.Hour)
		e := newEnv(t, Options{VerifyKey: []byte(testSecret)}, func(c *refapi.Config) { c.Now = serverClock.Now })
		e.login(t)
	})
}

func TestVerifyKeyAsymmetric(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	claims := jwt.MapClaims{"iss": Issuer, "nameid": "u", "role": "Admin"}
	rsaToken, _ := jwt.NewWithClaims(jwt.SigningMethodRS256, claims).SignedString(rsaKey)
	ecToken, _ := jwt.NewWithClaims(jwt.SigningMethodES256, claims).SignedString(ecKey)
	hsToken, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte("k"))
	tests := []struct {
		name  string
		key   any
		token string
		ok    bool
	}{
		{"rsa", &rsaKey.PublicKey, rsaToken, true},
		{"ecdsa", &ecKey.PublicKey, ecToken, true},
		{"rsa key, ecdsa token", &rsaKey.PublicKey, ecToken, false},
		{"rsa key, hmac token", &rsaKey.PublicKey, hsToken, false},
		{"hmac key, rsa token", []byte("k"), rsaToken, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := newVerifier(tt.key)
			if err != nil {
				t.Fatal(err)
			}
			info, err := v.parse(tt.token)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
			if tt.ok && info.user.Role != Admin {
				t.Errorf("role = %v", info.user.Role)
			}
		})
	}
	if _, err := New("http://x", testHardware, Options{VerifyKey: "a string"}); err == nil {
		t.Error("New accepted a string VerifyKey")
	}
	if _, err := New("http://x", testHardware, Options{VerifyKey: []byte{}}); err == nil {
		t.Error("New accepted an empty HMAC key")
	}
}

func TestNew(t *testing.T) {
	for _, base := range []string{"", "api.azaion.com", "ftp://x", "http://", "://"} {
		if _, err := New(base, testHardware, Options{}); err == nil {
			t.Errorf("New(%q) accepted", base)
		}
	}
	if _, err := New("https://api.azaion.com", "", Options{}); err == nil {
		t.Error("New accepted an empty fingerprint")
	}
	// A base URL with a path prefix and a trailing slash keeps its prefix.
	var path string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path = r.URL.Path
		http.Error(w, "no", http.StatusUnauthorized)
	}))
	defer srv.Close()
	c, err := New(srv.URL+"/api/", testHardware, Options{})
	if err != nil {
		t.Fatal(err)
	}
	c.Login(context.Background(), testEmail, testPassword)
	if path != "/api/login" {
		t.Errorf("path = %q, want /api/login", path)
	}
}

// No email, password, token, API key, hardware fingerprint or CDN key in any error text or log
// line, even when the server echoes the request in its error answers (the reference API does
// not: faults in front of it do).
func TestNoSecretsLeak(t *testing.T) {
	e := newEnv(t, Options{}, nil)
	var errs []error
	ctx := context.Background()
	collect := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	apiKey := security.APIKey(testEmail, testPassword, security.HardwareHash(testHardware))
	echo := func(w http.ResponseWriter, r *http.Request, ref http.Handler) {
		body, _ := io.ReadAll(r.Body)
		var creds struct{ Email, Password string }
		json.Unmarshal(body, &creds)
		switch {
		case r.URL.Path == "/login" && creds.Password == testPassword+"x": // a rejection quoting what was sent
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusConflict)
			json.NewEncoder(w).Encode(map[string]string{"message": "bad credentials for " + creds.Email + " / " + creds.Password})
		case r.URL.Path == "/resources/list/a":
			http.Error(w, "token "+r.Header.Get("Authorization")+" key "+apiKey, http.StatusInternalServerError)
		case r.URL.Path == "/resources/list/b":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"error":"password %s hardware %s email %s"}`, jsonEscape(testPassword), jsonEscape(testHardware), testEmail)
		case r.URL.Path == "/resources/get/c":
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprintf(w, `{"detail":"hardware %s of %s not bound"}`, jsonEscape(testHardware), testEmail)
		default:
			r.Body = io.NopCloser(bytes.NewReader(body))
			ref.ServeHTTP(w, r)
		}
	}
	e.setFault(echo)
	collect(e.client.Login(ctx, testEmail, testPassword+"x"))
	e.login(t)
	token := e.token()
	_, err := e.client.ListResources(ctx, "a")
	collect(err)
	_, err = e.client.ListResources(ctx, "b")
	collect(err)
	_, err = e.client.GetResource(ctx, "c", "m.small")
	collect(err)
	_, err = e.client.GetResource(ctx, "models", "missing")
	collect(err)
	e.ref.RevokeTokens()
	e.ref.SetFault(refapi.EndpointLogin, 401, 1)
	_, err = e.client.KeyFragment(ctx)
	collect(err)
	if len(errs) != 6 {
		t.Fatalf("%d errors, want 6: %v", len(errs), errs)
	}
	for _, i := range []int{0, 1, 2, 3} {
		if !strings.Contains(errs[i].Error(), "[redacted]") {
			t.Errorf("the upstream reason was dropped rather than redacted: %v", errs[i])
		}
	}
	secrets := []string{testEmail, testPassword, token, apiKey, testHardware, security.HardwareHash(testHardware),
		"SN-SECRET-123", testCDN.DownloaderAccessSecret, testCDN.UploaderAccessSecret}
	for _, err := range errs {
		for _, s := range secrets {
			if strings.Contains(err.Error(), s) {
				t.Errorf("error %q contains a secret", err)
			}
		}
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "logging in to the resource API again") {
		t.Errorf("expected log lines missing:\n%s", logs)
	}
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("logs contain a secret:\n%s", logs)
		}
	}
}

// jsonEscape escapes as System.Text.Json does by default, "+" included.
func jsonEscape(s string) string {
	return strings.NewReplacer(`"`, `\"`, `+`, `\u002B`, `\`, `\\`).Replace(s)
}

// TestOnLoginAndList: OnLogin is called after each successful Login, not after a failed one nor
// after the client's own re-login; ListResources names the small parts a folder holds (SPEC §3),
// as prefetch reads them.
func TestOnLoginAndList(t *testing.T) {
	var mu sync.Mutex
	logins := 0
	e := newEnv(t, Options{OnLogin: func() { mu.Lock(); logins++; mu.Unlock() }}, nil)
	count := func() int { mu.Lock(); defer mu.Unlock(); return logins }
	if err := e.client.Login(context.Background(), testEmail, "wrong"); err == nil {
		t.Fatal("a wrong password logged in")
	}
	if n := count(); n != 0 {
		t.Fatalf("OnLogin after a failed login: %d calls", n)
	}
	e.login(t)
	putResource(t, e, "models", "b.bin.small", "x")
	putResource(t, e, "models", "a.bin.small", "x")
	e.ref.RevokeTokens() // the next call logs in again by itself
	names, err := e.client.ListResources(context.Background(), "models")
	if err != nil || !slices.Equal(names, []string{"a.bin.small", "b.bin.small"}) {
		t.Fatalf("ListResources = %q, %v", names, err)
	}
	if n := count(); n != 1 {
		t.Errorf("OnLogin called %d times, want once (the re-login does not count)", n)
	}
	e.login(t)
	if n := count(); n != 2 {
		t.Errorf("OnLogin called %d times after a second login, want 2", n)
	}
}
