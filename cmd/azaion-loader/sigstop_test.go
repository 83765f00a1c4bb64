package main

// SPEC §10, deadlines: a dependency that takes connections and never answers (SIGSTOP) cannot
// make the loader hang. Everything here runs as a process: the loader, the reference Resource
// API, dockerd.

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/azaion/loader/internal/docker/dockertest"
	"github.com/azaion/loader/internal/testenv"
)

// margin is what a bound "within the timeout plus a margin" allows on a shared two-core machine.
const margin = 5 * time.Second

// The Resource API stopped with SIGSTOP during /login and during /load: 502 within
// UPSTREAM_TIMEOUT plus a margin; once it runs again, so does the loader.
func TestResourceAPISIGSTOP(t *testing.T) {
	t.Parallel()
	const upstreamTimeout = 2 * time.Second
	ref := startRefapi(t, refapiSetup{fragment: []byte("a key fragment nobody uses here")})
	p := startProcess(t, "RESOURCE_API_URL="+ref.url, "UPSTREAM_TIMEOUT="+upstreamTimeout.String(),
		"MODEL_CACHE_DIR="+t.TempDir(), "LOG_DIR="+t.TempDir())
	creds := testCreds()
	if code, body, _ := p.call(t, "POST", "/login", creds); code != http.StatusOK {
		t.Fatalf("login: %d %s", code, body)
	}

	ref.signal(t, syscall.SIGSTOP)
	for _, c := range []struct{ name, path, body string }{
		{"load", "/load/model.bin", `{"folder":"models"}`}, // the small part's fetch
		{"login", "/login", creds},
	} {
		code, body, took := p.call(t, "POST", c.path, c.body)
		t.Logf("%s with the API stopped: %d %s after %v", c.name, code, bytes.TrimSpace(body), took.Round(time.Millisecond))
		if code != http.StatusBadGateway {
			t.Errorf("%s: %d %s, want 502", c.name, code, body)
		}
		if took > upstreamTimeout+margin {
			t.Errorf("%s answered after %v, want within UPSTREAM_TIMEOUT %v plus %v", c.name, took, upstreamTimeout, margin)
		}
	}
	if st := p.status(t); !st.Authenticated {
		t.Error("a login that timed out logged the loader out")
	}

	ref.signal(t, syscall.SIGCONT)
	if code, body, _ := p.call(t, "POST", "/login", creds); code != http.StatusOK {
		t.Fatalf("login after SIGCONT: %d %s", code, body)
	}
}

// latencies measures GET /health, /status and /unlock/status one after the other until stop,
// and keeps the slowest answer of those sent while dockerd was paused.
type latencies struct {
	mu      sync.Mutex
	paused  bool
	n, slow int
	worst   time.Duration
	worstAt string
	stop    chan struct{}
	done    chan struct{}
}

func measure(t *testing.T, p *process) *latencies {
	l := &latencies{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for {
			for _, path := range []string{"/health", "/status", "/unlock/status"} {
				select {
				case <-l.stop:
					return
				default:
				}
				l.mu.Lock()
				paused := l.paused
				l.mu.Unlock()
				code, _, took, err := p.request(context.Background(), "GET", path, "", nil)
				if err != nil || code != http.StatusOK {
					t.Errorf("GET %s: %d %v", path, code, err)
					return
				}
				l.mu.Lock()
				if paused && l.paused { // the whole request fell within a pause
					l.n++
					if took > 100*time.Millisecond {
						l.slow++
					}
					if took > l.worst {
						l.worst, l.worstAt = took, path
					}
				}
				l.mu.Unlock()
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	t.Cleanup(l.end)
	return l
}

func (l *latencies) setPaused(p bool) {
	l.mu.Lock()
	l.paused = p
	l.mu.Unlock()
}

func (l *latencies) end() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	<-l.done
}

// dockerd stopped with SIGSTOP before an unlock and in the middle of one: the unlock ends in
// error naming the daemon within DOCKER_TIMEOUT plus a margin, and meanwhile /health, /status,
// /unlock/status and a second POST /unlock answer within 100 ms. After SIGCONT an unlock works.
// Not parallel: it stops the daemon every other test uses.
func TestDockerSIGSTOP(t *testing.T) {
	const dockerTimeout = 2 * time.Second
	tag := ulTag()
	images := []string{"azaion/annotations"}
	e := newTestEnv(t, envOptions{docker: true, images: images, tag: tag}) // the reference API and its fragment
	ref := images[0] + ":" + tag
	// Big enough that dockerd takes a while to load it, so the stop falls in the middle.
	dockertest.RandomImage(t, e.cfg.DockerHost, ref, 128<<20)
	ulSaveEncrypted(t, e.cfg.DockerHost, []string{ref}, e.fragment, e.cfg.ImagesPath)
	host := e.cfg.DockerHost
	logDir := t.TempDir()
	p := startServe(t, []string{"--docker-timeout", dockerTimeout.String()},
		"RESOURCE_API_URL="+e.refSrv.URL, "DOCKER_HOST="+host, "IMAGES_PATH="+e.cfg.ImagesPath,
		"DOCKER_IMAGES="+images[0], "API_VERSION="+tag, "MODEL_CACHE_DIR="+t.TempDir(), "LOG_DIR="+logDir)
	creds := testCreds()
	post := func() (string, time.Duration) {
		t.Helper()
		code, body, took := p.call(t, "POST", "/unlock", creds)
		if code != http.StatusOK {
			t.Fatalf("POST /unlock: %d %s", code, body)
		}
		var v struct{ State string }
		if err := json.Unmarshal(body, &v); err != nil {
			t.Fatal(err)
		}
		return v.State, took
	}
	wantDaemonError := func(phase string, since time.Time) {
		t.Helper()
		st := p.pollUnlock(t, phase+": the unlock ending", time.Minute, 10*time.Millisecond, func(s ulStatus) bool { return s.State == "error" || s.State == "ready" })
		took := time.Since(since)
		if st.State != "error" || st.Error == nil {
			t.Fatalf("%s: the unlock ended %v, want error", phase, st)
		}
		t.Logf("%s: error after %v: %s", phase, took.Round(time.Millisecond), *st.Error)
		want := "docker daemon " + host + " not answering within 2s"
		if !strings.Contains(*st.Error, want) {
			t.Errorf("%s: reason %q, want it to say %q", phase, *st.Error, want)
		}
		if took > dockerTimeout+margin {
			t.Errorf("%s: the unlock ended %v after, want within DOCKER_TIMEOUT %v plus %v", phase, took, dockerTimeout, margin)
		}
	}
	lat := measure(t, p)

	// 1. Stopped before the unlock.
	testenv.PauseDocker(t)
	lat.setPaused(true)
	start := time.Now()
	if st, took := post(); st != "authenticating" {
		t.Fatalf("POST /unlock with dockerd stopped answered %s (after %v), want authenticating: the run checks on", st, took)
	} else {
		t.Logf("first POST /unlock answered after %v", took.Round(time.Millisecond))
	}
	if st, took := post(); st != "authenticating" || took > 100*time.Millisecond {
		t.Errorf("second POST /unlock answered %s after %v, want the run's state at once", st, took)
	}
	wantDaemonError("stopped before", start)
	lat.setPaused(false)

	// 2. Stopped in the middle of the image load.
	testenv.ResumeDocker(t)
	if st, _ := post(); st != "authenticating" {
		t.Fatalf("POST /unlock after SIGCONT answered %s, want authenticating", st)
	}
	mid := p.pollUnlock(t, "the archive streaming into dockerd", time.Minute, 2*time.Millisecond, func(s ulStatus) bool {
		return s.State == "decrypting" && s.BytesDone != nil && *s.BytesDone > 0 || s.State == "error" || s.State == "ready"
	})
	if mid.State != "decrypting" {
		t.Fatalf("the unlock went to %v before dockerd could be stopped in the middle", mid)
	}
	testenv.PauseDocker(t)
	lat.setPaused(true)
	stopped := time.Now()
	t.Logf("dockerd stopped at %d of %d archive bytes", *mid.BytesDone, *mid.BytesTotal)
	if st, took := post(); st == "ready" || st == "error" || took > 100*time.Millisecond {
		t.Errorf("second POST /unlock during the load answered %s after %v, want the run's state at once", st, took)
	}
	wantDaemonError("stopped during the load", stopped)
	lat.setPaused(false)
	lat.end()

	lat.mu.Lock()
	t.Logf("%d requests while dockerd was stopped, the slowest %v (%s)", lat.n, lat.worst, lat.worstAt)
	if lat.n < 10 || lat.slow > 0 {
		t.Errorf("%d of %d requests took more than 100 ms while dockerd was stopped (the slowest %v, %s)", lat.slow, lat.n, lat.worst, lat.worstAt)
	}
	lat.mu.Unlock()

	// 3. Running again: a new unlock reaches ready.
	testenv.ResumeDocker(t)
	if st, _ := post(); st != "authenticating" {
		t.Fatalf("POST /unlock after SIGCONT answered %s, want authenticating", st)
	}
	if st := p.pollUnlock(t, "ready", 3*time.Minute, 50*time.Millisecond, func(s ulStatus) bool { return s.State == "ready" || s.State == "error" }); st.State != "ready" {
		t.Fatalf("unlock after SIGCONT ended %v", st)
	}
	ulAssertLoaded(t, ulEngine(t, host), []string{ref})
	e.checkNoSecrets(p.stderr.String() + readDir(t, logDir))
}
