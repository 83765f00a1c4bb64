package main

// SPEC §10, unattended start: the built binary with a device.conf brings the device to ready by
// itself, retrying while the Resource API is away, and stops at once when it is refused.

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/azaion/loader/internal/docker/dockertest"
	"github.com/azaion/loader/internal/httprec"
	"github.com/azaion/loader/internal/refapi"
)

// A device boots before its link is up: the Resource API is unreachable, then answers 503, then
// works. The attempts grow, nextAttemptAt is set, and once the API works the images become ready
// with no call to the loader but GET /status and GET /unlock/status.
func TestUnattendedBootWaitsForTheAPI(t *testing.T) {
	t.Parallel()
	tag := ulTag()
	images := []string{"azaion/annotations", "azaion/flights"}
	e := newTestEnv(t, envOptions{docker: true, images: images, tag: tag})
	refs := ulRefs(images, tag)
	ulEncrypt(t, e.fragment, bytes.NewReader(dockertest.BuildArchive(t, e.cfg.DockerHost, refs)), e.cfg.ImagesPath)

	apiAddr := freeAddr(t) // the API's address, with nothing listening on it yet

	const maxDelay = time.Second
	logDir := t.TempDir()
	conf := writeDeviceConfig(t, "AZAION_DEVICE_EMAIL="+testEmail+"\nAZAION_DEVICE_PASSWORD=\""+testPassword+"\"\n", 0o600)
	p := startProcess(t, "DEVICE_CONFIG="+conf, "RETRY_MAX_DELAY="+maxDelay.String(), "RESOURCE_API_URL=http://"+apiAddr,
		"DOCKER_HOST="+e.cfg.DockerHost, "IMAGES_PATH="+e.cfg.ImagesPath, "DOCKER_IMAGES="+strings.Join(images, ","),
		"API_VERSION="+tag, "MODEL_CACHE_DIR="+t.TempDir(), "LOG_DIR="+logDir, "LOG_LEVEL=debug")

	// waiting checks the schedule shown while a retry is due, and returns the attempts so far.
	waiting := func(phase string, after int, reason string) int {
		t.Helper()
		var last int
		st := p.pollStatus(t, phase, 2*time.Minute, func(s statusBody) bool {
			if n := s.attempts(); n < last {
				t.Fatalf("%s: attempts went down from %d: %v", phase, last, s)
			} else {
				last = n
			}
			return s.Unattended.State == "waiting" && s.attempts() >= after+2 &&
				s.Unattended.LastError != nil && strings.Contains(*s.Unattended.LastError, reason)
		})
		asked := time.Now()
		if st.Unattended.NextAttemptAt == nil {
			t.Fatalf("%s: waiting without nextAttemptAt: %v", phase, st)
		}
		next, err := time.Parse(time.RFC3339, *st.Unattended.NextAttemptAt)
		if err != nil {
			t.Fatalf("%s: nextAttemptAt %q is not RFC 3339: %v", phase, *st.Unattended.NextAttemptAt, err)
		}
		if next.After(asked.Add(maxDelay + time.Second)) {
			t.Errorf("%s: next attempt at %v, more than RETRY_MAX_DELAY after %v", phase, next, asked)
		}
		if st.Authenticated {
			t.Errorf("%s: authenticated before any login succeeded", phase)
		}
		if u := p.unlockStatus(t); u.State != "idle" {
			t.Errorf("%s: unlock %v before the login", phase, u)
		}
		t.Logf("%s: %v", phase, st)
		return st.attempts()
	}
	n := waiting("API unreachable", 0, "connection refused")

	// The link comes up, but the API answers 503 to logins.
	e.ref.SetFault(refapi.EndpointLogin, http.StatusServiceUnavailable, -1)
	okLogins := &countOK{h: e.ref, path: "/login"}
	api := httptest.NewUnstartedServer(okLogins)
	api.Listener.Close()
	var err error
	if api.Listener, err = net.Listen("tcp", apiAddr); err != nil {
		t.Fatalf("listen on the API's address again: %v", err)
	}
	api.Start()
	t.Cleanup(api.Close)
	n = waiting("API answering 503", n, "503")

	// The API works: the device becomes ready by itself.
	e.ref.SetFault(refapi.EndpointLogin, 0, 0)
	u := p.pollUnlock(t, "ready", 3*time.Minute, 50*time.Millisecond, func(s ulStatus) bool { return s.State == "ready" || s.State == "error" })
	if u.State != "ready" {
		t.Fatalf("the unattended unlock ended %v", u)
	}
	st := p.pollStatus(t, "done", time.Minute, func(s statusBody) bool { return s.Unattended.State != "working" })
	if st.Unattended.State != "done" || !st.Authenticated || st.Role != "CompanionPC" ||
		st.Unattended.NextAttemptAt != nil || st.Unattended.LastError != nil {
		t.Errorf("status once ready: %v; want done, logged in as the device", st)
	}
	ulAssertLoaded(t, ulEngine(t, e.cfg.DockerHost), refs)
	if got := okLogins.count(); got != 1 {
		t.Errorf("%d successful logins, want 1: the unlock uses the session", got)
	}
	if got := e.ref.Calls(refapi.EndpointKeyFragment); got != 1 {
		t.Errorf("key fragment fetched %d times, want 1", got)
	}

	// Nobody called the loader but to read its state.
	m := p.metrics(t)
	for series := range m {
		if strings.HasPrefix(series, "azaion_loader_http_requests_total{") && !strings.Contains(series, `route="GET /status"`) &&
			!strings.Contains(series, `route="GET /unlock/status"`) && !strings.Contains(series, `route="GET /metrics"`) {
			t.Errorf("the loader answered a request other than GET /status or /unlock/status: %s", series)
		}
	}
	for metric, want := range map[string]float64{
		`azaion_loader_unattended_attempts_total{outcome="ok",step="login"}`:    1,
		`azaion_loader_unattended_attempts_total{outcome="ok",step="unlock"}`:   1,
		`azaion_loader_unattended_attempts_total{outcome="retry",step="login"}`: float64(n),
		`azaion_loader_unlock_runs_total{outcome="ready"}`:                      1,
	} {
		if got := m[metric]; got != want {
			t.Errorf("%s = %v, want %v", metric, got, want)
		}
	}
	e.checkNoSecrets(p.stderr.String() + readDir(t, logDir))
}

// A wrong password in device.conf: one login reaches the API, the work fails with the reason,
// and no other attempt follows, however long one watches.
func TestUnattendedWrongPassword(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, envOptions{})
	const maxDelay = 100 * time.Millisecond
	const wrong = "Wr0ng-Pa55-NEVER-SHOWN"
	logDir := t.TempDir()
	conf := writeDeviceConfig(t, "AZAION_DEVICE_EMAIL="+testEmail+"\nAZAION_DEVICE_PASSWORD="+wrong+"\n", 0o600)
	p := startProcess(t, "DEVICE_CONFIG="+conf, "RETRY_MAX_DELAY="+maxDelay.String(), "RESOURCE_API_URL="+e.refSrv.URL,
		"IMAGES_PATH="+e.cfg.ImagesPath, "MODEL_CACHE_DIR="+t.TempDir(), "LOG_DIR="+logDir, "LOG_LEVEL=debug")
	st := p.pollStatus(t, "failed", time.Minute, func(s statusBody) bool { return s.Unattended.State == "failed" })
	failedAt := time.Now()
	if st.attempts() != 1 || st.Unattended.LastError == nil || !strings.Contains(*st.Unattended.LastError, "rejected the credentials") ||
		st.Unattended.NextAttemptAt != nil || st.Authenticated {
		t.Fatalf("status %v, want failed after 1 attempt with the reason", st)
	}
	t.Logf("%v", st)
	// Watch for 50 times RETRY_MAX_DELAY: any retry would have come many times over.
	polls := 0
	for time.Since(failedAt) < 50*maxDelay {
		st := p.status(t)
		if st.Unattended.State != "failed" || st.attempts() != 1 {
			t.Fatalf("after failing: %v", st)
		}
		if n := e.ref.Calls(refapi.EndpointLogin); n != 1 {
			t.Fatalf("%d logins reached the API, want exactly 1", n)
		}
		polls++
		time.Sleep(maxDelay / 4)
	}
	if n := e.ref.Calls(refapi.EndpointLogin) + e.ref.Calls(refapi.EndpointGet) + e.ref.Calls(refapi.EndpointKeyFragment); n != 1 {
		t.Errorf("%d calls at the API, want the one login", n)
	}
	if u := p.unlockStatus(t); u.State != "idle" {
		t.Errorf("unlock %v after a refused login, want idle", u)
	}
	t.Logf("%d polls over %v after the failure", polls, time.Since(failedAt).Round(time.Millisecond))
	logs := p.stderr.String() + readDir(t, logDir)
	if strings.Contains(logs, wrong) {
		t.Error("the device password is in the logs")
	}
	if !strings.Contains(logs, "state=failed") {
		t.Error("the logs do not say the unattended work failed")
	}
}

// countOK passes requests to h and counts the 2xx answers to path.
type countOK struct {
	h    http.Handler
	path string
	mu   sync.Mutex
	n    int
}

func (c *countOK) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := httprec.New(w)
	c.h.ServeHTTP(rec, r)
	if r.URL.Path == c.path && rec.Status()/100 == 2 {
		c.mu.Lock()
		c.n++
		c.mu.Unlock()
	}
}

func (c *countOK) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// The API asks the device to come back in an hour (429, Retry-After): the work waits that long,
// and SIGTERM ends the wait at once, the process exiting cleanly.
func TestUnattendedRetryAfterAndSIGTERM(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	logins := 0
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		logins++
		mu.Unlock()
		w.Header().Set("Retry-After", "3600")
		http.Error(w, "slow down", http.StatusTooManyRequests)
	}))
	t.Cleanup(api.Close)
	conf := writeDeviceConfig(t, "AZAION_DEVICE_EMAIL="+testEmail+"\nAZAION_DEVICE_PASSWORD="+testPassword+"\n", 0o600)
	p := startProcess(t, "DEVICE_CONFIG="+conf, "RETRY_MAX_DELAY=1s", "RESOURCE_API_URL="+api.URL,
		"MODEL_CACHE_DIR="+t.TempDir(), "LOG_DIR="+t.TempDir())
	st := p.pollStatus(t, "waiting", time.Minute, func(s statusBody) bool { return s.Unattended.State == "waiting" })
	next, err := time.Parse(time.RFC3339, *st.Unattended.NextAttemptAt)
	if err != nil || next.Before(time.Now().Add(59*time.Minute)) {
		t.Fatalf("next attempt at %v (%v), want the hour the API asked for, past RETRY_MAX_DELAY", next, err)
	}
	if !strings.Contains(*st.Unattended.LastError, "429") {
		t.Errorf("lastError %q does not name the 429", *st.Unattended.LastError)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second): // an hour's wait would not end by itself
		t.Fatal("the loader did not exit on SIGTERM while waiting for its retry")
	}
	if p.err != nil || !strings.Contains(p.stderr.String(), "stopped") {
		t.Errorf("exit after SIGTERM: %v\n%s", p.err, p.stderr.String())
	}
	mu.Lock()
	defer mu.Unlock()
	if logins != 1 {
		t.Errorf("%d logins, want 1", logins)
	}
}
