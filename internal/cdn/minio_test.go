package cdn_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/azaion/loader/internal/cdn"
	"github.com/azaion/loader/internal/testenv"
)

// Tests of the CDN client against the real MinIO (helpers_test.go, faultproxy_test.go).

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
	_, dlErr := c.Download(ctx, "bucket", "object", io.Discard)
	_, statErr := c.Stat(ctx, "bucket", "object")
	upErr := c.Upload(ctx, "bucket", "object", strings.NewReader("data"), 4, nil)
	for name, err := range map[string]error{"Download": dlErr, "Stat": statErr, "Upload": upErr} {
		if !errors.Is(err, cdn.ErrUnavailable) {
			t.Errorf("%s: %v, want ErrUnavailable", name, err)
		} else if strings.Contains(err.Error(), m.SecretKey) || strings.Contains(err.Error(), m.AccessKey) {
			t.Errorf("%s: error %q shows a credential", name, err)
		}
	}
}

// A CDN that accepts connections and never answers (a hung server, not a dead one) must fail
// Stat and Upload within the stall timeout per attempt: minio-go's own transport would wait a
// minute for each answer and repeat it, longer than the caller's deadline here.
func TestHungCDNIsUnavailable(t *testing.T) {
	addr := hungServer(t)
	c, err := cdn.New(cdn.Config{Endpoint: "http://" + addr, AccessKey: "access-key-Kd81", SecretKey: "secret-key-Lm02xx"},
		cdn.Options{StallTimeout: 200 * time.Millisecond, MaxResumes: 1, Backoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// A caller's deadline that only a client waiting minio-go's minute would reach.
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Second)
	defer cancel()
	_, statErr := c.Stat(ctx, "bucket", "object")
	upErr := c.Upload(ctx, "bucket", "object", strings.NewReader("data"), 4, nil)
	for name, err := range map[string]error{"Stat": statErr, "Upload": upErr} {
		if !errors.Is(err, cdn.ErrUnavailable) {
			t.Errorf("%s: %v, want ErrUnavailable", name, err)
		}
	}
	if ctx.Err() != nil {
		t.Error("the caller's deadline passed first: the stall timeout did not bound the waits")
	}
}

// hungServer listens on loopback, accepts every connection and never answers; it closes them
// when the test ends.
func hungServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns := make(chan net.Conn, 64)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- conn
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		for {
			select {
			case conn := <-conns:
				conn.Close()
			default:
				return
			}
		}
	})
	return ln.Addr().String()
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
	if elapsed < 300*time.Millisecond {
		t.Errorf("download with one stall took %v, less than the 300ms stall timeout it had to wait out", elapsed)
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
		// A stall or a backoff that outlasts the test: Download returning at all is the cancel.
		{"while-stalled", true, cdn.Options{StallTimeout: 24 * time.Hour}},
		{"during-backoff", false, cdn.Options{Backoff: 24 * time.Hour}},
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
			if _, ok := cancelledAt(); !ok {
				t.Fatalf("the download was not interrupted as planned (Download = %d, %v)", n, err)
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
