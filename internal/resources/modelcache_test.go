package resources_test

// Tests of the model cache of SPEC §11 against the real MinIO and the reference API.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/azaion/loader/internal/cdn"
	"github.com/azaion/loader/internal/refapi"
	"github.com/azaion/loader/internal/resources"
	"github.com/azaion/loader/internal/testenv"
)

// partialPath is where folder/name's partial download lives.
func (s *service) partialPath(folder, name string) string {
	return filepath.Join(s.cache, folder, "."+name+".big.partial")
}

// interrupt starts a download of folder/name through s, holds the CDN's answer after `after`
// bytes and then closes s, as a shutdown would: the download's owner ends it.
func interrupt(t *testing.T, s *service, folder, name string, after int64) {
	t.Helper()
	h := s.cdn.holdGet(t, folder, name+".big", after)
	errc := make(chan error, 1)
	go func() {
		_, err := s.Open(t.Context(), folder, name)
		errc <- err
	}()
	select {
	case <-h.reached:
	case err := <-errc:
		t.Fatalf("Open ended before the CDN's answer was held: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err == nil {
		t.Fatal("Open succeeded although its download was stopped halfway")
	}
}

// TestResumeAfterShutdown: a download stopped by the service's Close (its owner) keeps its
// bytes, fsynced; the next service on the same cache continues with a ranged GET If-Match
// from there and the resource comes out byte-identical.
func TestResumeAfterShutdown(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	const size = 8 << 20
	data := payload(size, 31)
	e.service().upload(t, e.folder, "m", data)
	first := e.service()
	interrupt(t, first, e.folder, "m", size/2)
	fi, err := os.Stat(first.partialPath(e.folder, "m"))
	if err != nil || fi.Size() < size/2-(64<<10) {
		t.Fatalf("partial after the shutdown: %v, %d bytes; want about %d", err, fi.Size(), size/2)
	}
	for _, f := range first.cacheFiles(t) {
		if strings.HasSuffix(f, ".big") {
			t.Errorf("a partial download is visible as %s", f)
		}
	}

	second := e.serviceWith(func(o *resources.Options) { o.CacheDir = first.cache })
	wantSame(t, "resumed", second.read(t, e.folder, "m"), data)
	rng := second.cdn.ranges(e.folder, "m.big")
	if len(rng) != 1 || rng[0] != fmt.Sprintf("bytes=%d-", fi.Size()) {
		t.Errorf("GETs after the restart: Range %q, want one from byte %d", rng, fi.Size())
	}
	_, big := e.rawParts(e.folder, "m")
	if got, want := second.cdn.received(), int64(len(big))-fi.Size(); got != want {
		t.Errorf("downloaded %d bytes after the restart, want the %d missing", got, want)
	}
	second.wantCached(t, e.folder, "m")
}

// TestResumeObjectReplaced: the object replaced on the CDN while a partial of the old one is
// on disk: the download starts again from zero and the answer is the new resource.
func TestResumeObjectReplaced(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	const size = 4 << 20
	e.service().upload(t, e.folder, "m", payload(size, 32))
	first := e.service()
	interrupt(t, first, e.folder, "m", size/2)
	if _, err := os.Stat(first.partialPath(e.folder, "m")); err != nil {
		t.Fatal(err)
	}
	v2 := payload(size, 33) // the same size: only the ETag tells
	e.service().upload(t, e.folder, "m", v2)

	second := e.serviceWith(func(o *resources.Options) { o.CacheDir = first.cache })
	wantSame(t, "after the replacement", second.read(t, e.folder, "m"), v2)
	if rng := second.cdn.ranges(e.folder, "m.big"); len(rng) != 1 || rng[0] != "" {
		t.Errorf("GETs after the replacement: Range %q, want one of the whole object", rng)
	}
	second.wantCached(t, e.folder, "m")
}

// TestRateLimit: CDN_RATE_LIMIT=1MiB and an 8 MiB part: the download takes at least 7 s. Only
// a lower bound: a cap that does not cap fails, a slow machine does not.
func TestRateLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	const size = 8 << 20
	data := payload(size, 34)
	e.service().upload(t, e.folder, "m", data)
	s := e.serviceWith(func(o *resources.Options) { o.RateLimit = 1 << 20 })
	start := time.Now()
	wantSame(t, "rate-limited", s.read(t, e.folder, "m"), data)
	if d := time.Since(start); d < 7*time.Second {
		t.Errorf("8 MiB at 1 MiB/s took %v, want at least 7 s", d)
	}
}

// TestInconsistentUpload: upload v1, then v2 whose small-part step fails: a device with an
// empty cache gets ErrInconsistent (502), never v1's small part joined to v2's big part; a
// device with v1 cached keeps serving v1; a successful upload makes it consistent again.
func TestInconsistentUpload(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	up := e.service()
	v1, v2, v3 := payload(100_000, 35), payload(100_000, 36), payload(100_000, 37)
	up.upload(t, e.folder, "m", v1)
	cached := e.service()
	wantSame(t, "v1", cached.read(t, e.folder, "m"), v1)

	e.api.SetFault(refapi.EndpointUpload, 500, 1)
	if err := up.Upload(t.Context(), e.folder, "m", bytes.NewReader(v2)); err == nil {
		t.Fatal("the upload of v2 succeeded although its small part was refused")
	}
	fresh := e.service()
	_, err := fresh.Open(t.Context(), e.folder, "m")
	if !errors.Is(err, resources.ErrInconsistent) {
		t.Fatalf("Open after the failed upload: %v, want ErrInconsistent", err)
	}
	fresh.wantNoCacheFiles(t)
	if n := fresh.cdn.gets(e.folder, "m.big"); n != 0 {
		t.Errorf("%d GETs of the inconsistent big part", n)
	}
	wantSame(t, "v1 from a cache", cached.read(t, e.folder, "m"), v1)

	up.upload(t, e.folder, "m", v3)
	wantSame(t, "v3", fresh.read(t, e.folder, "m"), v3)
}

// TestStalePartFetchedForEveryCaller: callers that find a cached part that does not decrypt
// refetch it, each by its own finding, also when they join a download another caller
// started for its own reason (a plain miss); none gets the stale part back.
func TestStalePartFetchedForEveryCaller(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	data := payload(300_000, 38)
	e.service().upload(t, e.folder, "m", data)
	small, big := e.rawParts(e.folder, "m")
	broken := bytes.Clone(big)
	broken[len(broken)-1] ^= 0xff // the padding: this part cannot decrypt, whatever its record says
	for round := range 5 {
		s := e.service()
		// The stale part is paired and matches its record: only decryption tells.
		if err := s.Preload(e.folder, "m", small, bytes.NewReader(broken)); err != nil {
			t.Fatal(err)
		}
		h := s.cdn.holdGet(t, e.folder, "m.big", 1) // the refetch waits until everyone is in
		done := make(chan []byte, 8)
		for range 8 {
			go func() {
				res, err := s.Open(t.Context(), e.folder, "m")
				if err != nil {
					t.Errorf("round %d: %v", round, err)
					done <- nil
					return
				}
				defer res.Close()
				b, _ := io.ReadAll(res)
				done <- b
			}()
		}
		<-h.reached
		h.Release()
		for range 8 {
			wantSame(t, fmt.Sprintf("round %d", round), <-done, data)
		}
		if n := s.cdn.gets(e.folder, "m.big"); n != 1 {
			t.Errorf("round %d: %d GETs, want 1 shared refetch", round, n)
		}
	}
}

// TestDownloadOwnedByService: a shared download whose callers went away belongs to the
// service: Close ends it at once (no goroutine left behind, its partial kept); and a CDN that
// stops sending ends it by the stall timeout, with no caller waiting.
func TestDownloadOwnedByService(t *testing.T) {
	e := newEnv(t, envConfig{})
	const size = 4 << 20
	e.service().upload(t, e.folder, "m", payload(size, 39))
	s := e.serviceWith(func(o *resources.Options) {
		o.CDNOptions.StallTimeout = time.Second
		o.CDNOptions.MaxResumes = -1 // the stall ends it
	})
	closeIdle := s.cdn.next.(interface{ CloseIdleConnections() }).CloseIdleConnections
	base := runtime.NumGoroutine()

	h := s.cdn.holdGet(t, e.folder, "m.big", size/2) // held for ever: a CDN that stopped
	start := time.Now()
	_, err := s.Open(t.Context(), e.folder, "m")
	if !errors.Is(err, cdn.ErrUnavailable) {
		t.Fatalf("Open through a stalled CDN: %v, want cdn.ErrUnavailable", err)
	}
	t.Logf("the stalled download ended after %v", time.Since(start).Round(time.Millisecond))
	h.Release()
	wantGoroutines(t, base, closeIdle)
	fi, err := os.Stat(s.partialPath(e.folder, "m"))
	if err != nil || fi.Size() == 0 {
		t.Fatalf("the stalled download left no partial to resume: %v", err)
	}

	// A download nobody waits for any more is stopped by Close, and leaves its partial.
	h = s.cdn.holdGet(t, e.folder, "m.big", size/4)
	ctx, cancel := context.WithCancel(t.Context())
	go func() { <-h.reached; cancel() }()
	if _, err := s.Open(ctx, e.folder, "m"); err == nil {
		t.Fatal("Open succeeded although its client left")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wantGoroutines(t, base, closeIdle)
	if _, err := os.Stat(s.partialPath(e.folder, "m")); err != nil {
		t.Fatalf("Close dropped the partial: %v", err)
	}
	if _, err := s.Open(t.Context(), e.folder, "m"); err == nil {
		t.Error("a closed service still downloads")
	}
}

// TestOfflineFirst: with the CDN stopped, a cached big part without a pairing record (put on
// the device at provisioning) is served when it decrypts; a damaged one is not.
func TestOfflineFirst(t *testing.T) {
	e := newEnv(t, envConfig{})
	data := payload(200_000, 40)
	e.service().upload(t, e.folder, "m", data)
	_, big := e.rawParts(e.folder, "m")
	s := e.serviceWith(func(o *resources.Options) { o.CDNOptions.MaxResumes = -1 })
	provision := func(b []byte) {
		dir := filepath.Join(s.cache, e.folder)
		os.MkdirAll(dir, 0o755)
		if err := os.WriteFile(s.bigPath(e.folder, "m"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	provision(big)
	testenv.StopMinIO(t)
	wantSame(t, "offline", s.read(t, e.folder, "m"), data)

	// The last byte of the block before the last: it XORs straight into the padding byte, so
	// the padding is wrong every time (a flipped byte in the last block scrambles it and
	// leaves valid padding once in about 256 runs).
	broken := bytes.Clone(big)
	broken[len(broken)-1-16] ^= 0xff
	provision(broken)
	if _, err := s.Open(t.Context(), e.folder, "m"); !errors.Is(err, cdn.ErrUnavailable) {
		t.Errorf("offline with a part that does not decrypt: %v, want cdn.ErrUnavailable", err)
	}
}
