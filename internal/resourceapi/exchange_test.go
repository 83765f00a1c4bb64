package resourceapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/azaion/loader/internal/refapi"
)

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

// hungClient is a client of a server that writes what begin writes (nothing if begin is nil)
// and then never finishes its answer, until the test ends.
func hungClient(t *testing.T, opts Options, begin func(w http.ResponseWriter)) *Client {
	t.Helper()
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if begin != nil {
			begin(w)
		}
		<-block
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(block) }) // first: Close waits for the handler
	c, err := New(srv.URL, testHardware, opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestHeaderTimeout(t *testing.T) {
	c := hungClient(t, Options{HeaderTimeout: 300 * time.Millisecond}, nil)
	// The server never answers: an error at all can only come from the header timeout (a
	// client without one would hang here until go test's -timeout).
	err := c.Login(context.Background(), testEmail, testPassword)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "timeout") {
		t.Fatalf("err = %v, want ErrUnavailable naming the timeout", err)
	}
}

func TestBodyStall(t *testing.T) {
	c := hungClient(t, Options{HeaderTimeout: 300 * time.Millisecond}, func(w http.ResponseWriter) {
		w.Header().Set("Content-Length", "100")
		w.Write([]byte(`{"token":`))
		w.(http.Flusher).Flush()
	})
	// The body never completes: an error at all can only come from the stall timeout.
	err := c.Login(context.Background(), testEmail, testPassword)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "stalled") {
		t.Fatalf("err = %v, want ErrUnavailable naming the stall", err)
	}
}

func TestContextCancel(t *testing.T) {
	c := hungClient(t, Options{}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := c.Login(ctx, testEmail, testPassword)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want DeadlineExceeded and ErrUnavailable", err)
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
