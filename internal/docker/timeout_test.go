package docker_test

// Deadlines (SPEC §10): no call waits on a daemon for ever. These use small fake daemons; the
// real dockerd stopped with SIGSTOP is in cmd/azaion-loader (TestDockerSIGSTOP).

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/azaion/loader/internal/docker"
)

// silentDaemon accepts connections on a unix socket and never answers, as a stopped dockerd
// does (the kernel completes the connection, nobody reads). It returns the DOCKER_HOST.
func silentDaemon(t *testing.T) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "docker.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return "unix://" + sock
}

// checkNotAnswering wants the error of a call the daemon at host did not answer within d.
func checkNotAnswering(t *testing.T, what string, err error, host string) {
	t.Helper()
	if !errors.Is(err, docker.ErrNotAnswering) || !errors.Is(err, docker.ErrUnreachable) {
		t.Fatalf("%s: got %v, want ErrNotAnswering (and ErrUnreachable)", what, err)
	}
	if want := "docker daemon " + host + " not answering within 1s"; !strings.Contains(err.Error(), want) {
		t.Errorf("%s: error %q, want it to say %q", what, err, want)
	}
}

func TestSilentDaemon(t *testing.T) {
	host := silentDaemon(t)
	e := newEngine(t, host, docker.WithTimeout(time.Second))
	ctx := testContext(t) // minutes: only the Engine's own timeout can end these calls in time
	checkNotAnswering(t, "Ping", e.Ping(ctx), host)
	_, err := e.ImageExists(ctx, "azaion/flights:latest")
	checkNotAnswering(t, "ImageExists", err, host)
	checkNotAnswering(t, "LoadImages", e.LoadImages(ctx, bytes.NewReader(make([]byte, 64<<20))), host)
}

func TestDefaultTimeout(t *testing.T) {
	e := newEngine(t, "unix:///nowhere.sock")
	if e.Timeout() != docker.DefaultTimeout || docker.DefaultTimeout != 60*time.Second {
		t.Errorf("timeout %v, want SPEC §10's 60s", e.Timeout())
	}
	e2 := newEngine(t, "unix:///nowhere.sock", docker.WithTimeout(-time.Second))
	if e2.Timeout() != docker.DefaultTimeout {
		t.Errorf("WithTimeout(-1s) gave %v, want the default", e2.Timeout())
	}
}

// unixDaemon is fakeDaemon on a unix socket.
func unixDaemon(t *testing.T, load http.HandlerFunc) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "docker.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(daemonAPI(load))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return "unix://" + sock
}

// trickle reads r slowly: chunk bytes every pause.
func trickle(r io.Reader, chunk int, pause time.Duration) (int64, error) {
	buf := make([]byte, chunk)
	var total int64
	for {
		n, err := io.ReadFull(r, buf)
		total += int64(n)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
		time.Sleep(pause)
	}
}

// A load that takes several times the timeout in all, but never pauses that long, succeeds:
// the timeout is on the time without progress, both while the daemon reads the archive and while
// it reports on it.
func TestLoadImagesSlowButMoving(t *testing.T) {
	const timeout = 400 * time.Millisecond
	var got int64
	// On a unix socket, as dockerd's: its buffers hold a few hundred KiB, so what the daemon
	// has not read yet stays with the sender.
	host := unixDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		got, _ = trickle(r.Body, 128<<10, timeout/4)
		w.Header().Set("Content-Type", "application/json")
		for range 8 {
			io.WriteString(w, `{"status":"Loading layer","progressDetail":{"current":1,"total":2},"id":"abc"}`+"\n")
			w.(http.Flusher).Flush()
			time.Sleep(timeout / 4)
		}
		io.WriteString(w, `{"stream":"Loaded image: azaion/flights:latest\n"}`+"\n")
	})
	const size = 2 << 20 // 16 reads, 15 pauses: the reading alone takes several timeouts
	start := time.Now()
	if err := newEngine(t, host, docker.WithTimeout(timeout)).LoadImages(testContext(t), bytes.NewReader(make([]byte, size))); err != nil {
		t.Fatalf("a slow load that keeps moving failed: %v", err)
	}
	if got != size {
		t.Errorf("daemon read %d bytes, want %d", got, size)
	}
	// Not an upper bound: the proof that the load outlasted the timeout it was held to.
	if took := time.Since(start); took < 3*timeout {
		t.Fatalf("the load took %v, less than 3 timeouts: the test proves nothing", took)
	}
}

// A daemon that stops in the middle, reading or reporting, ends the load after the timeout.
func TestLoadImagesStalls(t *testing.T) {
	for _, c := range []struct {
		name string
		load func(w http.ResponseWriter, r *http.Request, stop <-chan struct{})
	}{
		{"while reading the archive", func(w http.ResponseWriter, r *http.Request, stop <-chan struct{}) {
			io.CopyN(io.Discard, r.Body, 64<<10)
			<-stop
		}},
		{"after reading the archive", func(w http.ResponseWriter, r *http.Request, stop <-chan struct{}) {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"status":"Loading layer","id":"abc"}`+"\n")
			w.(http.Flusher).Flush()
			<-stop
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			stop := make(chan struct{})
			host := fakeDaemon(t, func(w http.ResponseWriter, r *http.Request) { c.load(w, r, stop) })
			t.Cleanup(func() { close(stop) }) // before the server's Close, which waits for handlers
			fake := strings.TrimPrefix(host, "tcp://")
			err := newEngine(t, host, docker.WithTimeout(time.Second)).LoadImages(testContext(t), bytes.NewReader(make([]byte, 1<<20)))
			if !errors.Is(err, docker.ErrNotAnswering) || !strings.Contains(err.Error(), fake+" not answering within 1s") {
				t.Fatalf("got %v, want the daemon not answering within 1s", err)
			}
		})
	}
}

func TestLoadImagesRejected(t *testing.T) {
	host := fakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, `{"errorDetail":{"message":"invalid tar header"}}`+"\n")
	})
	err := newEngine(t, host).LoadImages(testContext(t), strings.NewReader("junk"))
	if !errors.Is(err, docker.ErrRejected) || errors.Is(err, docker.ErrUnreachable) {
		t.Fatalf("got %v, want ErrRejected", err)
	}
}
