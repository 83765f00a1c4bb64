package resourceapi

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/azaion/loader/internal/refapi"
	"github.com/azaion/loader/internal/testenv"
)

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
// shared clock). The probe asks for the key fragment, whose calls the renewal tests do not count.
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

	waiting := testenv.NewWatchedContext()
	second := make(chan error, 1)
	go func() {
		_, err := e.client.KeyFragment(waiting)
		second <- err
	}()
	select {
	case <-waiting.Watched(): // the second caller is waiting on something it could give up on
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
