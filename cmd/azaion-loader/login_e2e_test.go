package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/azaion/loader/internal/refapi"
)

func TestHealthAndStatusBeforeLogin(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	code, body := e.do(http.MethodGet, "/health", nil)
	if code != http.StatusOK || strings.TrimSpace(string(body)) != `{"status":"healthy"}` {
		t.Fatalf("/health: %d %s", code, body)
	}
	st := e.status()
	if st.Status != "healthy" || st.Authenticated || st.ModelCacheDir != e.cfg.ModelCacheDir {
		t.Fatalf("/status before login: %+v", st)
	}
}

func TestLoginThroughReferenceAPI(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	code, body := e.postJSON("/login", map[string]string{"email": testEmail, "password": testPassword})
	if code != http.StatusOK || strings.TrimSpace(string(body)) != `{"status":"ok"}` {
		t.Fatalf("login: %d %s", code, body)
	}
	st := e.status()
	if !st.Authenticated || st.UserID != testUserID || st.Role != "CompanionPC" {
		t.Fatalf("/status after login: %+v", st)
	}
	// The login fetched cdn.yaml too: one login and one resources/get on the reference API.
	if n := e.ref.Calls(refapi.EndpointLogin); n != 1 {
		t.Errorf("reference API saw %d logins, want 1", n)
	}
	if n := e.ref.Calls(refapi.EndpointGet); n != 1 {
		t.Errorf("reference API saw %d resources/get (cdn.yaml), want 1", n)
	}
	e.assertNoSecrets()
}

func TestLoginRejected(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	for _, c := range []struct{ name, email, password string }{
		{"wrong password", testEmail, "not-the-password"},
		{"unknown user", "nobody@azaion.test", testPassword},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, body := e.postJSON("/login", map[string]string{"email": c.email, "password": c.password})
			if code != http.StatusUnauthorized {
				t.Fatalf("got %d %s, want 401", code, body)
			}
			if d := detail(t, body); d == "" {
				t.Fatal("empty detail")
			}
			if e.status().Authenticated {
				t.Fatal("/status says authenticated after a rejected login")
			}
		})
	}
}

// TestLoginRefusedDevice: the API accepts the credentials but refuses cdn.yaml because the user
// is bound to other hardware. That is 403 with the API's reason (SPEC §2), not 401 "rejected the
// credentials": the person at the device must call for a rebinding, not retype a password.
func TestLoginRefusedDevice(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	e.ref.SetHardware(testEmail, "CPU: another device")
	code, body := e.postJSON("/login", map[string]string{"email": testEmail, "password": testPassword})
	if code != http.StatusForbidden {
		t.Fatalf("got %d %s, want 403", code, body)
	}
	if d := detail(t, body); !strings.Contains(d, "bound to another device") {
		t.Errorf("detail %q does not give the API's reason", d)
	}
	if e.status().Authenticated {
		t.Error("/status says authenticated after a refused login")
	}
	e.assertNoSecrets("CPU: another device")
}

// TestLoginLogsUserID: the log names the user by the JWT's nameid, never by the email.
func TestLoginLogsUserID(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	e.login()
	if !strings.Contains(e.logs.String(), "msg=\"logged in to the resource API\" user=42 role=CompanionPC") {
		t.Errorf("no login line naming user 42 in the log:\n%s", e.logs.String())
	}
	e.assertNoSecrets()
}

func TestLoginBadRequests(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	cases := []struct {
		name string
		body string
		want int
	}{
		{"empty body", "", 422},
		{"empty object", "{}", 422},
		{"missing password", `{"email":"a@b.c"}`, 422},
		{"missing email", `{"password":"x"}`, 422},
		{"empty email", `{"email":"","password":"x"}`, 422},
		{"empty password", `{"email":"a@b.c","password":""}`, 422},
		{"wrong type", `{"email":"a@b.c","password":123}`, 422},
		{"not JSON", `email=a&password=b`, 422},
		{"array", `[1,2]`, 422},
		{"2 MiB body", `{"email":"a@b.c","password":"` + strings.Repeat("x", 2<<20) + `"}`, 413},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, body := e.postJSON("/login", c.body)
			if code != c.want {
				t.Fatalf("got %d %s, want %d", code, body, c.want)
			}
			detail(t, body)
		})
	}
	if n := e.ref.Calls(refapi.EndpointLogin); n != 0 {
		t.Errorf("bad requests reached the reference API %d times", n)
	}
}

func TestLoginUpstreamDown(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	e.refSrv.Close()
	code, body := e.postJSON("/login", map[string]string{"email": testEmail, "password": testPassword})
	if code != http.StatusBadGateway {
		t.Fatalf("got %d %s, want 502", code, body)
	}
	if d := detail(t, body); !strings.Contains(d, "unreachable") {
		t.Errorf("detail %q does not say the API is unreachable", d)
	}
	e.assertNoSecrets()
}

func TestLoginUpstreamBroken(t *testing.T) {
	for _, c := range []struct {
		name    string
		handler http.HandlerFunc
	}{
		{"500", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "boom", http.StatusInternalServerError) }},
		{"garbage", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("<html>not json</html>")) }},
		{"token not a JWT", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"token":"abc.def"}`))
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newTestEnv(t, envOptions{})
			broken := httptest.NewServer(c.handler)
			defer broken.Close()
			e.retarget(broken.URL)
			code, body := e.postJSON("/login", map[string]string{"email": testEmail, "password": testPassword})
			if code != http.StatusBadGateway {
				t.Fatalf("got %d %s, want 502", code, body)
			}
			detail(t, body)
		})
	}
}

// retarget rebuilds the loader against another Resource API URL.
func (e *testEnv) retarget(url string) {
	e.t.Helper()
	e.srv.Close()
	e.loader.Close()
	e.cfg.ResourceAPIURL = url
	l, err := newLoader(e.cfg, e.logs, "/")
	if err != nil {
		e.t.Fatal(err)
	}
	e.loader = l
	e.srv = httptest.NewServer(l.handler())
}

func TestLoginUpstreamNeverAnswers(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 16)
	go func() { // accepts, never answers; stops when ln is closed
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	defer func() {
		ln.Close()
		for c := range accepted {
			c.Close()
		}
	}()
	const timeout = 700 * time.Millisecond
	e := newTestEnv(t, envOptions{upstreamWait: timeout})
	e.retarget("http://" + ln.Addr().String())
	start := time.Now()
	code, body := e.postJSON("/login", map[string]string{"email": testEmail, "password": testPassword})
	took := time.Since(start)
	if code != http.StatusBadGateway {
		t.Fatalf("got %d %s, want 502", code, body)
	}
	// Generous bound: the point is "an error, not a hang", not a timing measurement.
	if took > 10*timeout {
		t.Fatalf("took %v with a %v upstream timeout", took, timeout)
	}
}

func TestUnauthorizedMidSessionReloginsOnce(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	e.login()
	e.ref.ResetCalls()
	e.ref.RevokeTokens()
	if _, err := e.loader.api.ListResources(t.Context(), "models"); err != nil {
		t.Fatalf("call after revocation: %v", err)
	}
	if n := e.ref.Calls(refapi.EndpointLogin); n != 1 {
		t.Errorf("re-logins = %d, want exactly 1", n)
	}
	if n := e.ref.Calls(refapi.EndpointList); n != 2 {
		t.Errorf("list calls = %d, want 2 (the refused one and one repeat)", n)
	}
	m := scrape(t, e)
	if got := m["azaion_loader_relogins_total"]; got != 1 {
		t.Errorf("relogins metric = %v, want 1", got)
	}
	if got := m[`azaion_loader_upstream_calls_total{endpoint="resources/list",outcome="401"}`]; got != 1 {
		t.Errorf("refused list calls metric = %v, want 1", got)
	}
}

func TestConcurrentLoginAndStatus(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	var wg sync.WaitGroup
	errs := make(chan string, 100)
	for i := range 50 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			body := fmt.Sprintf(`{"email":%q,"password":%q}`, testEmail, testPassword)
			req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/login", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				errs <- err.Error()
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				errs <- fmt.Sprintf("login %d: %d", i, resp.StatusCode)
			}
		}()
		go func() {
			defer wg.Done()
			resp, err := http.Get(e.srv.URL + "/status")
			if err != nil {
				errs <- err.Error()
				return
			}
			var st statusBody
			err = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			// Either state is fine mid-flight, but a half state (authenticated without a
			// user) is not.
			if err != nil || (st.Authenticated && st.UserID != testUserID) {
				errs <- fmt.Sprintf("status %d: %+v %v", i, st, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if st := e.status(); !st.Authenticated || st.UserID != testUserID || st.Role != "CompanionPC" {
		t.Fatalf("final status %+v", st)
	}
}

func TestAPITokenRequired(t *testing.T) {
	const token = "loader-api-token-123"
	e := newTestEnv(t, envOptions{apiToken: token})
	routes := []struct{ method, path string }{
		{"GET", "/status"}, {"POST", "/login"}, {"POST", "/load/a.bin"}, {"POST", "/upload/a.bin"},
		{"POST", "/unlock"}, {"GET", "/unlock/status"}, {"GET", "/metrics"}, {"GET", "/openapi.json"},
	}
	for _, r := range routes {
		for _, auth := range []string{"", "Bearer wrong", "Basic " + token, token} {
			code, body := e.do(r.method, r.path, strings.NewReader("{}"), "Authorization", auth, "Content-Type", "application/json")
			if auth == "" {
				// do() adds the right token when none is given: send one explicitly empty.
				req, _ := http.NewRequest(r.method, e.srv.URL+r.path, strings.NewReader("{}"))
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				code = resp.StatusCode
			}
			if code != http.StatusUnauthorized {
				t.Errorf("%s %s with Authorization %q: %d %s, want 401", r.method, r.path, auth, code, body)
			}
		}
	}
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/health", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/health without token: %d, want 200", resp.StatusCode)
	}
	if code, _ := e.do(http.MethodGet, "/status", nil); code != http.StatusOK {
		t.Errorf("/status with the token: %d", code)
	}
	e.login()
	e.assertNoSecrets(token)
}
