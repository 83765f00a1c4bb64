package resourceapi

// One login in flight at a time (SPEC §10: the real API locks an account after repeated failed
// logins), and Retry-After.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/azaion/loader/internal/refapi"
	"github.com/azaion/loader/internal/security"
	"github.com/azaion/loader/internal/testenv"
)

// loginGate holds every POST /login in front of the reference API until released, and records
// how many were in the API at once.
type loginGate struct {
	entered chan struct{} // one value per login that reached the API
	release chan struct{}
	opened  sync.Once

	mu            sync.Mutex
	now, max, all int
}

func gateLogins(t *testing.T, e *env) *loginGate {
	g := &loginGate{entered: make(chan struct{}, 100), release: make(chan struct{})}
	e.setFault(g.serve)
	t.Cleanup(g.open)
	return g
}

func (g *loginGate) serve(w http.ResponseWriter, r *http.Request, ref http.Handler) {
	if r.URL.Path != "/login" {
		ref.ServeHTTP(w, r)
		return
	}
	g.mu.Lock()
	g.now++
	g.all++
	g.max = max(g.max, g.now)
	g.mu.Unlock()
	g.entered <- struct{}{}
	<-g.release
	ref.ServeHTTP(w, r)
	g.mu.Lock()
	g.now--
	g.mu.Unlock()
}

func (g *loginGate) open() { g.opened.Do(func() { close(g.release) }) }

func (g *loginGate) counts() (all, maxAtOnce int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.all, g.max
}

// waitWatched waits until every watcher's caller blocks on its context: it is waiting for
// something, not talking to the API.
func waitWatched(t *testing.T, ws []*testenv.WatchedContext) {
	t.Helper()
	for _, w := range ws {
		select {
		case <-w.Watched():
		case <-time.After(30 * time.Second):
			t.Fatal("a caller never waited")
		}
	}
}

func TestConcurrentLoginsShareOne(t *testing.T) {
	for _, c := range []struct {
		name     string
		password string
		want     error
	}{
		{"refused", "not-the-password", ErrUnauthorized},
		{"accepted", testPassword, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, Options{}, nil)
			g := gateLogins(t, e)
			errs := make(chan error, 20)
			go func() { errs <- e.client.Login(context.Background(), testEmail, c.password) }()
			<-g.entered // the first login is at the API and held there
			var ws []*testenv.WatchedContext
			for range 19 {
				w := testenv.NewWatchedContext()
				ws = append(ws, w)
				go func() { errs <- e.client.Login(w, testEmail, c.password) }()
			}
			waitWatched(t, ws)
			g.open()
			for range 20 {
				if err := <-errs; !errors.Is(err, c.want) && err != c.want {
					t.Errorf("Login: %v, want %v", err, c.want)
				}
			}
			if all, _ := g.counts(); all != 1 {
				t.Errorf("%d logins reached the API for 20 concurrent Logins with the same credentials, want 1", all)
			}
		})
	}
}

func TestLoginsWithOtherCredentialsWait(t *testing.T) {
	e := newEnv(t, Options{}, nil)
	g := gateLogins(t, e)
	first := make(chan error, 1)
	go func() { first <- e.client.Login(context.Background(), testEmail, "wrong-password") }()
	<-g.entered
	w := testenv.NewWatchedContext()
	second := make(chan error, 1)
	go func() { second <- e.client.Login(w, testEmail, testPassword) }()
	waitWatched(t, []*testenv.WatchedContext{w})
	if all, _ := g.counts(); all != 1 {
		t.Fatalf("%d logins at the API while the first is in flight, want 1", all)
	}
	g.open()
	if err := <-first; !errors.Is(err, ErrUnauthorized) {
		t.Errorf("first Login: %v, want ErrUnauthorized", err)
	}
	if err := <-second; err != nil {
		t.Errorf("second Login: %v", err)
	}
	if all, most := g.counts(); all != 2 || most != 1 {
		t.Errorf("%d logins, at most %d at once; want 2, one at a time", all, most)
	}
}

// A re-login the client makes by itself waits for a Login in flight; when that Login replaces the
// session, the re-login is not needed any more.
func TestRenewalWaitsForLogin(t *testing.T) {
	e := newEnv(t, Options{}, nil)
	e.login(t)
	e.clock.Advance(5 * time.Hour) // the token has expired: the next call logs in again
	g := gateLogins(t, e)
	login := make(chan error, 1)
	go func() { login <- e.client.Login(context.Background(), testEmail, testPassword) }()
	<-g.entered
	// The call finds the token expired and waits for its re-login, started while the Login is
	// held. Had the re-login not waited, it would be at the API now, or would log in after the
	// Login: either shows in the counts below.
	w := testenv.NewWatchedContext()
	call := make(chan error, 1)
	go func() {
		_, err := e.client.KeyFragment(w)
		call <- err
	}()
	waitWatched(t, []*testenv.WatchedContext{w})
	g.open()
	if err := <-login; err != nil {
		t.Fatal(err)
	}
	if err := <-call; err != nil {
		t.Fatal(err)
	}
	if all, most := g.counts(); all != 1 || most != 1 {
		t.Errorf("%d logins after the held one (at most %d at once), want 1: the Login's session served the call", all, most)
	}
}

// A waiter does not take the result of a Login whose caller gave up: it tries itself.
func TestAbandonedLoginIsNotShared(t *testing.T) {
	e := newEnv(t, Options{}, nil)
	g := gateLogins(t, e)
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() { first <- e.client.Login(ctx, testEmail, testPassword) }()
	<-g.entered
	w := testenv.NewWatchedContext()
	second := make(chan error, 1)
	go func() { second <- e.client.Login(w, testEmail, testPassword) }()
	waitWatched(t, []*testenv.WatchedContext{w})
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Login: %v", err)
	}
	g.open()
	if err := <-second; err != nil {
		t.Fatalf("the waiting Login failed with the abandoned one's error: %v", err)
	}
	if all, _ := g.counts(); all != 2 {
		t.Errorf("%d logins at the API, want 2", all)
	}
}

func TestRetryAfter(t *testing.T) {
	e := newEnv(t, Options{}, nil)
	var status atomic.Int32
	var header atomic.Value
	e.setFault(func(w http.ResponseWriter, r *http.Request, ref http.Handler) {
		if s := int(status.Load()); s != 0 {
			w.Header().Set("Retry-After", header.Load().(string))
			w.WriteHeader(s)
			return
		}
		ref.ServeHTTP(w, r)
	})
	status.Store(http.StatusTooManyRequests)
	header.Store("7")
	err := e.client.Login(context.Background(), testEmail, testPassword)
	var ra *RetryAfterError
	if !errors.As(err, &ra) || ra.After != 7*time.Second || !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrUnauthorized) {
		t.Fatalf("Login answered 429 Retry-After: 7: %v; want a RetryAfterError of 7s that is ErrUnavailable", err)
	}
	t.Logf("error: %v", err)

	status.Store(0)
	e.login(t)
	status.Store(http.StatusServiceUnavailable)
	header.Store(e.clock.Now().Add(time.Minute).UTC().Format(http.TimeFormat))
	_, err = e.client.KeyFragment(context.Background())
	// An HTTP date has whole seconds: a minute ahead of a clock between two seconds.
	if !errors.As(err, &ra) || ra.After <= 59*time.Second || ra.After > time.Minute || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("key fragment answered 503 with a date a minute ahead: %v", err)
	}

	status.Store(http.StatusTooManyRequests)
	header.Store("")
	_, err = e.client.KeyFragment(context.Background())
	if errors.As(err, &ra) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("429 without Retry-After: %v, want a plain ErrUnavailable", err)
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
