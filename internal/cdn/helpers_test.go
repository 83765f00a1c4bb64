package cdn_test

// What the MinIO tests share: clients, objects placed directly, and the requests a client made.

import (
	"bytes"
	"context"
	"fmt"
	mathrand "math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/azaion/loader/internal/cdn"
	"github.com/azaion/loader/internal/streams"
	"github.com/azaion/loader/internal/testenv"
)

// payload returns n deterministic pseudo-random bytes.
func payload(n int, seed uint64) []byte {
	r := mathrand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 42})
	b := make([]byte, n)
	_, _ = r.Read(b)
	return b
}

func newTransport(t *testing.T) *http.Transport {
	t.Helper()
	tr, err := minio.DefaultTransport(false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// newClient is a cdn.Client of the test MinIO, or of endpoint (host:port) when not empty.
func newClient(t *testing.T, m testenv.MinIOServer, endpoint string, opts cdn.Options) *cdn.Client {
	t.Helper()
	if endpoint == "" {
		endpoint = m.Endpoint
	}
	if opts.Transport == nil {
		opts.Transport = newTransport(t)
	}
	c, err := cdn.New(cdn.Config{Endpoint: "http://" + endpoint, AccessKey: m.AccessKey, SecretKey: m.SecretKey}, opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// put uploads data as bucket/object and returns the object's ETag, which resumed downloads
// must carry.
func put(t *testing.T, m testenv.MinIOServer, bucket, object string, data []byte) (etag string) {
	t.Helper()
	c := newClient(t, m, "", cdn.Options{})
	if err := c.Upload(t.Context(), bucket, object, bytes.NewReader(data), int64(len(data)), nil); err != nil {
		t.Fatalf("upload: %v", err)
	}
	obj, err := c.Stat(t.Context(), bucket, object)
	if err != nil {
		t.Fatalf("stat: %v", err)
	}
	return obj.ETag
}

func checkSame(t *testing.T, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Fatalf("downloaded %d bytes, want %d; first difference at byte %d", len(got), len(want), i)
	}
}

// request is what recordingTransport saw of one request.
type request struct {
	method, path, rangeHeader, ifMatch string
	received                           atomic.Int64 // body bytes the client read
}

// recordingTransport records every request and counts the body bytes the client reads.
type recordingTransport struct {
	base http.RoundTripper
	mu   sync.Mutex
	reqs []*request
}

func (rt *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r := &request{method: req.Method, path: req.URL.Path, rangeHeader: req.Header.Get("Range"), ifMatch: req.Header.Get("If-Match")}
	rt.mu.Lock()
	rt.reqs = append(rt.reqs, r)
	rt.mu.Unlock()
	resp, err := rt.base.RoundTrip(req)
	if err == nil {
		resp.Body = streams.ReadCloser(streams.Count(resp.Body, &r.received), resp.Body)
	}
	return resp, err
}

func (rt *recordingTransport) requests() []*request {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return append([]*request(nil), rt.reqs...)
}

// checkRanged asserts that the first request asked for the whole object and every later one
// for the rest from exactly the bytes received before, with the ETag of the first answer.
func checkRanged(t *testing.T, reqs []*request, etag string) {
	t.Helper()
	var received int64
	for i, r := range reqs {
		if r.method != http.MethodGet {
			t.Errorf("request %d: %s %s, want only GETs", i, r.method, r.path)
		}
		if i == 0 {
			if r.rangeHeader != "" {
				t.Errorf("request 0: Range %q, want none", r.rangeHeader)
			}
		} else {
			want := fmt.Sprintf("bytes=%d-", received)
			if received == 0 || r.rangeHeader != want {
				t.Errorf("request %d: Range %q, want %q (never from zero)", i, r.rangeHeader, want)
			}
			if r.ifMatch != `"`+etag+`"` {
				t.Errorf("request %d: If-Match %q, want %q", i, r.ifMatch, `"`+etag+`"`)
			}
		}
		received += r.received.Load()
	}
}

// signalWriter discards what is written to it and closes got at the first byte, or, when
// match is set, at the first write that contains match (a log line).
type signalWriter struct {
	match string
	once  sync.Once
	got   chan struct{}
}

func newSignalWriter(match string) *signalWriter {
	return &signalWriter{match: match, got: make(chan struct{})}
}

func (w *signalWriter) Write(p []byte) (int, error) {
	if len(p) > 0 && (w.match == "" || bytes.Contains(p, []byte(w.match))) {
		w.once.Do(func() { close(w.got) })
	}
	return len(p), nil
}

// cancelWhen returns a context that is cancelled once ready returns (it gets a channel that is
// closed when the test is over), and the time it was cancelled at. A guard cancels it after
// two minutes anyway; cancelledAt then reports ok false.
func cancelWhen(t *testing.T, ready func(stop <-chan struct{}) bool) (ctx context.Context, cancelledAt func() (time.Time, bool)) {
	t.Helper()
	guard, stop := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(stop)
	ctx, cancel := context.WithCancel(guard)
	done := make(chan struct{})
	var at time.Time
	var ok bool
	go func() {
		defer close(done)
		if ok = ready(guard.Done()); ok {
			at = time.Now()
		}
		cancel()
	}()
	return ctx, func() (time.Time, bool) {
		<-done
		return at, ok
	}
}
