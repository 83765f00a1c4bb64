package cdn_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mathrand "math/rand/v2"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/azaion/loader/internal/cdn"
	"github.com/azaion/loader/internal/streams"
	"github.com/azaion/loader/internal/testenv"
)

// --- helpers -------------------------------------------------------------------------------

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

// put uploads data as bucket/object through a direct client.
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

// proxy is a TCP proxy to MinIO that misbehaves on purpose: for its i-th connection (counted
// from the last setPolicy), policy(i) says after how many bytes of the answer to cut the
// connection (stall false) or to stop forwarding while keeping it open (stall true); a
// negative limit forwards everything. Each cut and each stall is reported on events once
// the limit's bytes have been forwarded.
type proxy struct {
	ln     net.Listener
	target string
	events chan proxyEvent

	mu      sync.Mutex
	trickle time.Duration // when set, a stalled connection forwards one byte per trickle
	policy  func(i int) (limit int64, stall bool)
	gen     int // how many times setPolicy was called
	conns   []net.Conn
	n       int
	closed  chan struct{}
	wg      sync.WaitGroup
}

// proxyEvent is a cut or a stall of connection conn (numbered as policy saw it) under the
// policy of generation gen (0 for startProxy's, 1 for the first setPolicy's, ...).
type proxyEvent struct {
	gen, conn int
	stall     bool
}

func startProxy(t *testing.T, target string, policy func(i int) (int64, bool)) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, policy: policy, closed: make(chan struct{}),
		events: make(chan proxyEvent, 64)}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

func (p *proxy) Addr() string { return p.ln.Addr().String() }

// setPolicy makes policy decide for every connection accepted from now on, numbered from 0
// again, whatever the connections before it were.
func (p *proxy) setPolicy(policy func(i int) (int64, bool)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.policy, p.n = policy, 0
	p.gen++
}

func (p *proxy) Close() {
	p.mu.Lock()
	select {
	case <-p.closed:
	default:
		close(p.closed)
		p.ln.Close()
		for _, c := range p.conns {
			c.Close()
		}
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.closed:
		c.Close()
		return false
	default:
		p.conns = append(p.conns, c)
		return true
	}
}

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(client) {
			return
		}
		p.mu.Lock()
		i, gen, policy := p.n, p.gen, p.policy
		p.n++
		p.mu.Unlock()
		p.wg.Add(1)
		go p.serve(client, gen, i, policy)
	}
}

func (p *proxy) serve(client net.Conn, gen, i int, policy func(int) (int64, bool)) {
	defer p.wg.Done()
	defer client.Close()
	limit, stall := policy(i)
	server, err := net.Dial("tcp", p.target)
	if err != nil || !p.track(server) {
		return
	}
	defer server.Close()
	upDone := make(chan struct{})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer close(upDone)
		_, _ = io.Copy(server, client)
		// The client went away: so does the connection to MinIO, ending the copy below.
		server.Close()
	}()
	if limit < 0 {
		_, _ = io.Copy(client, server)
	} else if n, _ := io.CopyN(client, server, limit); n == limit {
		if !stall {
			client.Close()
		}
		select {
		case p.events <- proxyEvent{gen: gen, conn: i, stall: stall}:
		default:
		}
		p.mu.Lock()
		trickle := p.trickle
		p.mu.Unlock()
		switch {
		case stall && trickle > 0:
			// Keep the connection barely alive: a byte now and then, never enough.
			tick := time.NewTicker(trickle)
			defer tick.Stop()
			one := make([]byte, 1)
		trickling:
			for {
				select {
				case <-upDone:
					break trickling
				case <-p.closed:
					break trickling
				case <-tick.C:
					if _, err := io.ReadFull(server, one); err != nil {
						break trickling
					}
					if _, err := client.Write(one); err != nil {
						break trickling
					}
				}
			}
		case stall:
			// Hold the connection open, silent, until the client or the test gives up.
			select {
			case <-upDone:
			case <-p.closed:
			}
		}
	}
	client.Close()
	<-upDone
}

// cutAfter cuts the first len(limits) connections after limits[i] bytes.
func cutAfter(limits ...int64) func(int) (int64, bool) {
	return func(i int) (int64, bool) {
		if i < len(limits) {
			return limits[i], false
		}
		return -1, false
	}
}

// --- tests ---------------------------------------------------------------------------------

func TestUploadDownloadRoundTrip(t *testing.T) {
	m := testenv.MinIO(t)
	bucket := m.Bucket(t, "cdn") // not created: the first Upload creates it
	c := newClient(t, m, "", cdn.Options{})
	ctx := t.Context()
	// One PUT, and a multipart upload of parts of 16 MiB and a short last one.
	for _, tc := range []struct {
		name string
		size int
	}{{"empty", 0}, {"one", 1}, {"5MiB+7", 5<<20 + 7}, {"16MiB", 16 << 20}, {"33MiB+3", 33<<20 + 3}} {
		t.Run(tc.name, func(t *testing.T) {
			data := payload(tc.size, uint64(tc.size))
			object := tc.name + ".big"
			sum := fmt.Sprintf("%x", sha256.Sum256(data[:min(len(data), 100)]))
			meta := map[string]string{cdn.MetaSmallSHA256: sum}
			if err := c.Upload(ctx, bucket, object, bytes.NewReader(data), int64(len(data)), meta); err != nil {
				t.Fatalf("Upload: %v", err)
			}
			obj, err := c.Stat(ctx, bucket, object)
			if err != nil || obj.Size != int64(len(data)) || obj.ETag == "" || obj.SmallSHA256 != sum {
				t.Fatalf("Stat = %+v, %v; want %d bytes, an ETag, small-sha256 %s", obj, err, len(data), sum)
			}
			var buf bytes.Buffer
			n, err := c.Download(ctx, bucket, object, &buf)
			if err != nil {
				t.Fatalf("Download: %v", err)
			}
			if n != int64(len(data)) {
				t.Errorf("Download = %d bytes, want %d", n, len(data))
			}
			checkSame(t, buf.Bytes(), data)
		})
	}
}

func TestNotFound(t *testing.T) {
	m := testenv.MinIO(t)
	bucket := m.Bucket(t, "cdn")
	put(t, m, bucket, "present", []byte("x"))
	c := newClient(t, m, "", cdn.Options{})
	ctx := t.Context()
	for _, tc := range []struct{ bucket, object string }{
		{bucket, "missing"},
		{bucket + "-missing", "missing"},
	} {
		var buf bytes.Buffer
		n, err := c.Download(ctx, tc.bucket, tc.object, &buf)
		if !errors.Is(err, cdn.ErrNotFound) || n != 0 || buf.Len() != 0 {
			t.Errorf("Download %s/%s = %d, %v; want 0, ErrNotFound", tc.bucket, tc.object, n, err)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "download "+tc.bucket+"/"+tc.object+": ") {
			t.Errorf("error %q does not name the download", err)
		}
		if _, err := c.Stat(ctx, tc.bucket, tc.object); !errors.Is(err, cdn.ErrNotFound) {
			t.Errorf("Stat %s/%s: %v, want ErrNotFound", tc.bucket, tc.object, err)
		}
	}
}

func TestWrongCredentials(t *testing.T) {
	m := testenv.MinIO(t)
	bucket := m.Bucket(t, "cdn")
	put(t, m, bucket, "present", []byte("x"))
	ctx := t.Context()
	const wrongSecret = "not-the-secret-Zq83xK"
	for _, tc := range []struct{ name, access, secret string }{
		{"wrong-secret", m.AccessKey, wrongSecret},
		{"unknown-access-key", "unknown-access-key-Pw71", wrongSecret},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := cdn.New(cdn.Config{Endpoint: "http://" + m.Endpoint, AccessKey: tc.access, SecretKey: tc.secret},
				cdn.Options{Transport: newTransport(t), MaxResumes: 1, Backoff: 10 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			_, dlErr := c.Download(ctx, bucket, "present", io.Discard)
			_, statErr := c.Stat(ctx, bucket, "present")
			upErr := c.Upload(ctx, bucket, "new", strings.NewReader("data"), 4, nil)
			upNewBucketErr := c.Upload(ctx, bucket+"-new", "new", strings.NewReader("data"), 4, nil)
			for name, err := range map[string]error{"Download": dlErr, "Stat": statErr, "Upload": upErr, "Upload new bucket": upNewBucketErr} {
				if !errors.Is(err, cdn.ErrDenied) {
					t.Errorf("%s: %v, want ErrDenied", name, err)
					continue
				}
				for _, secret := range []string{tc.secret, m.SecretKey, tc.access} {
					if strings.Contains(err.Error(), secret) {
						t.Errorf("%s: error %q shows a credential", name, err)
					}
				}
			}
		})
	}
}

func TestClosedPortIsUnavailable(t *testing.T) {
	m := testenv.MinIOServer{AccessKey: "access-key-Kd81", SecretKey: "secret-key-Lm02xx"}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c := newClient(t, m, addr, cdn.Options{MaxResumes: 2, Backoff: 10 * time.Millisecond})
	ctx := t.Context()
	start := time.Now()
	_, dlErr := c.Download(ctx, "bucket", "object", io.Discard)
	_, statErr := c.Stat(ctx, "bucket", "object")
	upErr := c.Upload(ctx, "bucket", "object", strings.NewReader("data"), 4, nil)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v to give up on a closed port", d)
	}
	for name, err := range map[string]error{"Download": dlErr, "Stat": statErr, "Upload": upErr} {
		if !errors.Is(err, cdn.ErrUnavailable) {
			t.Errorf("%s: %v, want ErrUnavailable", name, err)
		} else if strings.Contains(err.Error(), m.SecretKey) || strings.Contains(err.Error(), m.AccessKey) {
			t.Errorf("%s: error %q shows a credential", name, err)
		}
	}
}

func TestResumeAfterBrokenConnection(t *testing.T) {
	m := testenv.MinIO(t)
	bucket := m.Bucket(t, "cdn")
	data := payload(8<<20, 8)
	etag := put(t, m, bucket, "model.big", data)

	p := startProxy(t, m.Endpoint, cutAfter(1<<20, 2<<20+12345))
	rt := &recordingTransport{base: newTransport(t)}
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c := newClient(t, m, p.Addr(), cdn.Options{Transport: rt, Backoff: 10 * time.Millisecond, Logger: logger})
	var buf bytes.Buffer
	n, err := c.Download(t.Context(), bucket, "model.big", &buf)
	if err != nil {
		t.Fatalf("Download: %v", err)
	}
	if n != int64(len(data)) {
		t.Errorf("Download = %d, want %d", n, len(data))
	}
	checkSame(t, buf.Bytes(), data)
	reqs := rt.requests()
	if len(reqs) != 3 {
		t.Errorf("%d requests, want 3 (one per connection cut, plus the first)", len(reqs))
	}
	checkRanged(t, reqs, etag)
	if got := strings.Count(logs.String(), "resuming"); got != 2 {
		t.Errorf("%d resume warnings, want 2:\n%s", got, logs.String())
	}
	if strings.Contains(logs.String(), m.SecretKey) {
		t.Errorf("the log shows the secret key:\n%s", logs.String())
	}
}

func TestResumeAfterStall(t *testing.T) {
	m := testenv.MinIO(t)
	bucket := m.Bucket(t, "cdn")
	data := payload(4<<20, 4)
	etag := put(t, m, bucket, "model.big", data)

	p := startProxy(t, m.Endpoint, func(i int) (int64, bool) {
		if i == 0 {
			return 1 << 20, true
		}
		return -1, false
	})
	rt := &recordingTransport{base: newTransport(t)}
	c := newClient(t, m, p.Addr(), cdn.Options{Transport: rt, StallTimeout: 300 * time.Millisecond, Backoff: 10 * time.Millisecond})
	var buf bytes.Buffer
	start := time.Now()
	n, err := c.Download(t.Context(), bucket, "model.big", &buf)
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("Download: %v", err)
	}
	if n != int64(len(data)) {
		t.Errorf("Download = %d, want %d", n, len(data))
	}
	checkSame(t, buf.Bytes(), data)
	if elapsed < 300*time.Millisecond || elapsed > 5*time.Second {
		t.Errorf("download with one stall took %v, want about the 300ms stall timeout", elapsed)
	}
	reqs := rt.requests()
	if len(reqs) < 2 { // more only if a slow machine paused a resumed attempt for 300ms as well
		t.Errorf("%d requests, want 2", len(reqs))
	}
	checkRanged(t, reqs, etag)
}

// TestTrickleIsAStall: a connection that delivers a byte every 20 ms never goes silent, but
// brings less than StallMinBytes per stall window: it is resumed, not waited on for ever.
func TestTrickleIsAStall(t *testing.T) {
	m := testenv.MinIO(t)
	bucket := m.Bucket(t, "cdn")
	data := payload(2<<20, 14)
	etag := put(t, m, bucket, "model.big", data)
	p := startProxy(t, m.Endpoint, func(i int) (int64, bool) {
		if i == 0 {
			return 512 << 10, true
		}
		return -1, false
	})
	p.mu.Lock()
	p.trickle = 20 * time.Millisecond
	p.mu.Unlock()
	rt := &recordingTransport{base: newTransport(t)}
	c := newClient(t, m, p.Addr(), cdn.Options{Transport: rt, StallTimeout: 300 * time.Millisecond, Backoff: 10 * time.Millisecond})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second) // a hang shows as a failure, not a stuck run
	defer cancel()
	var buf bytes.Buffer
	n, err := c.Download(ctx, bucket, "model.big", &buf)
	if err != nil {
		t.Fatalf("Download: %v (after %d bytes)", err, n)
	}
	checkSame(t, buf.Bytes(), data)
	reqs := rt.requests()
	if len(reqs) < 2 {
		t.Errorf("%d requests, want the trickling one resumed", len(reqs))
	}
	checkRanged(t, reqs, etag)
}

func TestTooManyBreaks(t *testing.T) {
	m := testenv.MinIO(t)
	bucket := m.Bucket(t, "cdn")
	data := payload(4<<20, 5)
	etag := put(t, m, bucket, "model.big", data)

	p := startProxy(t, m.Endpoint, func(int) (int64, bool) { return 256 << 10, false })
	rt := &recordingTransport{base: newTransport(t)}
	c := newClient(t, m, p.Addr(), cdn.Options{Transport: rt, MaxResumes: 3, Backoff: 5 * time.Millisecond})
	var buf bytes.Buffer
	n, err := c.Download(t.Context(), bucket, "model.big", &buf)
	if !errors.Is(err, cdn.ErrUnavailable) {
		t.Fatalf("Download: %v, want ErrUnavailable", err)
	}
	t.Logf("error: %v", err)
	if n != int64(buf.Len()) || n == 0 || n >= int64(len(data)) {
		t.Errorf("Download = %d bytes, wrote %d, want the same, between 0 and %d", n, buf.Len(), len(data))
	}
	checkSame(t, buf.Bytes(), data[:buf.Len()])
	reqs := rt.requests()
	if len(reqs) != 4 {
		t.Errorf("%d requests, want 4 (the first and 3 resumes)", len(reqs))
	}
	checkRanged(t, reqs, etag)
}

func TestObjectChangedMidDownload(t *testing.T) {
	m := testenv.MinIO(t)
	bucket := m.Bucket(t, "cdn")
	put(t, m, bucket, "model.big", payload(4<<20, 6))
	direct := newClient(t, m, "", cdn.Options{})
	replaced := payload(4<<20, 7)

	p := startProxy(t, m.Endpoint, func(i int) (int64, bool) {
		if i == 0 {
			return 1 << 20, false
		}
		if i == 1 { // before the resume reaches MinIO, replace the object
			if err := direct.Upload(context.Background(), bucket, "model.big", bytes.NewReader(replaced), int64(len(replaced)), nil); err != nil {
				t.Errorf("replace the object: %v", err)
			}
		}
		return -1, false
	})
	rt := &recordingTransport{base: newTransport(t)}
	c := newClient(t, m, p.Addr(), cdn.Options{Transport: rt, Backoff: 10 * time.Millisecond})
	_, err := c.Download(t.Context(), bucket, "model.big", io.Discard)
	if !errors.Is(err, cdn.ErrChanged) || !errors.Is(err, cdn.ErrUnavailable) {
		t.Fatalf("Download: %v, want ErrChanged", err)
	}
	if reqs := rt.requests(); len(reqs) != 2 {
		t.Errorf("%d requests, want 2: a changed object is not retried", len(reqs))
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

// TestCancel: cancelling a download while its connection is stalled, or while it waits to
// resume, ends it promptly with the context's error and the bytes written so far.
func TestCancel(t *testing.T) {
	m := testenv.MinIO(t)
	bucket := m.Bucket(t, "cdn")
	put(t, m, bucket, "model.big", payload(4<<20, 9))

	for _, tc := range []struct {
		name  string
		stall bool
		opts  cdn.Options
	}{
		{"while-stalled", true, cdn.Options{StallTimeout: time.Minute}},
		{"during-backoff", false, cdn.Options{Backoff: time.Minute}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startProxy(t, m.Endpoint, func(int) (int64, bool) { return 512 << 10, tc.stall })
			// The client logs each resume just before it waits out the backoff.
			resuming := newSignalWriter("resuming")
			opts := tc.opts
			opts.Logger = slog.New(slog.NewTextHandler(resuming, nil))
			c := newClient(t, m, p.Addr(), opts)
			w := newSignalWriter("")
			ctx, cancelledAt := cancelWhen(t, func(stop <-chan struct{}) bool {
				if !tc.stall {
					select {
					case <-resuming.got:
						return true
					case <-stop:
						return false
					}
				}
				// Stalled: the proxy went silent, and the client has bytes to show for it.
				select {
				case ev := <-p.events:
					if !ev.stall {
						return false
					}
				case <-stop:
					return false
				}
				select {
				case <-w.got:
					return true
				case <-stop:
					return false
				}
			})
			n, err := c.Download(ctx, bucket, "model.big", w)
			returned := time.Now()
			at, ok := cancelledAt()
			if !ok {
				t.Fatalf("the download was not interrupted as planned (Download = %d, %v)", n, err)
			}
			if d := returned.Sub(at); d > 10*time.Second {
				t.Errorf("Download returned %v after the cancel, want promptly (the %s lasts a minute)", d, tc.name)
			}
			if !errors.Is(err, context.Canceled) || errors.Is(err, cdn.ErrUnavailable) {
				t.Errorf("Download: %v, want context.Canceled only", err)
			}
			if n == 0 {
				t.Errorf("Download = 0 bytes, want the bytes written before the cancel")
			}
			if n >= 512<<10 {
				t.Errorf("Download = %d bytes, more than the proxy let through", n)
			}
		})
	}
}

func TestNoGoroutineLeak(t *testing.T) {
	m := testenv.MinIO(t)
	bucket := m.Bucket(t, "cdn")
	data := payload(2<<20, 10)
	put(t, m, bucket, "model.big", data)

	tr, err := minio.DefaultTransport(false)
	if err != nil {
		t.Fatal(err)
	}
	baseline := runtime.NumGoroutine()
	// A download that meets a cut and a stall and resumes after each, as often as it takes.
	p := startProxy(t, m.Endpoint, func(i int) (int64, bool) {
		switch i {
		case 0:
			return 300 << 10, false // cut
		case 1:
			return 300 << 10, true // stall
		}
		return -1, false
	})
	c := newClient(t, m, p.Addr(), cdn.Options{Transport: tr, StallTimeout: 300 * time.Millisecond,
		Backoff: 5 * time.Millisecond, MaxResumes: 50})
	var buf bytes.Buffer
	if _, err := c.Download(t.Context(), bucket, "model.big", &buf); err != nil {
		t.Fatalf("Download: %v", err)
	}
	checkSame(t, buf.Bytes(), data)

	// Then a download cancelled while its connection stalls.
	tr.CloseIdleConnections()
	p.setPolicy(func(int) (int64, bool) { return 100 << 10, true }) // stall every connection
	c2 := newClient(t, m, p.Addr(), cdn.Options{Transport: tr, StallTimeout: time.Minute})
	ctx, cancelledAt := cancelWhen(t, func(stop <-chan struct{}) bool {
		for {
			select {
			case ev := <-p.events:
				if ev.gen == 1 && ev.stall {
					return true
				}
			case <-stop:
				return false
			}
		}
	})
	_, err = c2.Download(ctx, bucket, "model.big", io.Discard)
	if _, ok := cancelledAt(); !ok {
		t.Fatalf("the second download did not stall as planned: %v", err)
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Download: %v, want context.Canceled", err)
	}

	// Once the client let go of every connection, the proxy is back to its accept loop: any
	// connection left open (a body not closed, an attempt not cancelled) shows as its
	// goroutines and the client transport's.
	tr.CloseIdleConnections()
	deadline := time.Now().Add(20 * time.Second)
	for runtime.NumGoroutine() > baseline+1 {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, %d before the downloads plus the proxy's accept loop:\n%s",
				runtime.NumGoroutine(), baseline, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDownloadFrom: a download that an earlier process left at an offset continues there with
// a ranged GET If-Match its ETag; an object replaced since then is ErrChanged, not spliced.
func TestDownloadFrom(t *testing.T) {
	m := testenv.MinIO(t)
	bucket := m.Bucket(t, "cdn")
	data := payload(3<<20+5, 8)
	etag := put(t, m, bucket, "model.big", data)
	rt := &recordingTransport{base: newTransport(t)}
	c := newClient(t, m, "", cdn.Options{Transport: rt})

	const offset = 1<<20 + 3
	var buf bytes.Buffer
	n, err := c.DownloadFrom(t.Context(), bucket, "model.big", &buf, cdn.Resume{Offset: offset, ETag: etag})
	if err != nil || n != int64(len(data))-offset {
		t.Fatalf("DownloadFrom = %d, %v; want %d bytes", n, err, len(data)-offset)
	}
	checkSame(t, buf.Bytes(), data[offset:])
	reqs := rt.requests()
	if len(reqs) != 1 || reqs[0].rangeHeader != fmt.Sprintf("bytes=%d-", offset) || reqs[0].ifMatch != `"`+etag+`"` {
		t.Fatalf("requests %+v, want one GET with Range bytes=%d- If-Match %q", reqs, offset, etag)
	}

	put(t, m, bucket, "model.big", payload(3<<20+5, 9)) // replaced: same size, another ETag
	buf.Reset()
	n, err = c.DownloadFrom(t.Context(), bucket, "model.big", &buf, cdn.Resume{Offset: offset, ETag: etag})
	if !errors.Is(err, cdn.ErrChanged) || n != 0 || buf.Len() != 0 {
		t.Fatalf("DownloadFrom a replaced object = %d bytes, %v; want nothing and ErrChanged", n, err)
	}
	if _, err := c.DownloadFrom(t.Context(), bucket, "model.big", io.Discard, cdn.Resume{Offset: 5}); err == nil {
		t.Fatal("DownloadFrom an offset without an ETag succeeded")
	}
}
