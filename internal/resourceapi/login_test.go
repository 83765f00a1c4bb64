package resourceapi

// One login in flight at a time (SPEC §10: the real API locks an account after repeated failed
// logins), and Retry-After.

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// loginGate holds every POST /login in front of the reference API until released, and records
// how many were in the API at once.
type loginGate struct {
	entered chan struct{} // one value per login that reached the API
	release chan struct{}

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

var openOnce sync.Map

func (g *loginGate) open() {
	if _, done := openOnce.LoadOrStore(g, true); !done {
		close(g.release)
	}
}

func (g *loginGate) counts() (all, maxAtOnce int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.all, g.max
}

// waitWatched waits until every watcher's caller blocks on its context: it is waiting for
// something, not talking to the API.
func waitWatched(t *testing.T, ws []*doneWatcher) {
	t.Helper()
	for _, w := range ws {
		select {
		case <-w.watched:
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
			var ws []*doneWatcher
			for range 19 {
				w := newDoneWatcher()
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
	w := newDoneWatcher()
	second := make(chan error, 1)
	go func() { second <- e.client.Login(w, testEmail, testPassword) }()
	waitWatched(t, []*doneWatcher{w})
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
	w := newDoneWatcher()
	call := make(chan error, 1)
	go func() {
		_, err := e.client.KeyFragment(w)
		call <- err
	}()
	waitWatched(t, []*doneWatcher{w})
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
	w := newDoneWatcher()
	second := make(chan error, 1)
	go func() { second <- e.client.Login(w, testEmail, testPassword) }()
	waitWatched(t, []*doneWatcher{w})
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

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"120", 2 * time.Minute, true},
		{" 0 ", 0, true},
		{"3", 3 * time.Second, true},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{"Sunday, 01-Mar-26 12:00:30 GMT", 30 * time.Second, true}, // RFC 850, still accepted
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},     // in the past: now
		{"99999999999999999999999", maxRetryAfter, true},
		{"172800", maxRetryAfter, true},
		{"", 0, false},
		{"soon", 0, false},
		{"-5", 0, false},
		{"1.5", 0, false},
	} {
		got, ok := parseRetryAfter(c.in, now)
		if got != c.want || ok != c.ok {
			t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", c.in, got, ok, c.want, c.ok)
		}
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
