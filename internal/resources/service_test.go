package resources_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/azaion/loader/internal/cdn"
	"github.com/azaion/loader/internal/refapi"
	"github.com/azaion/loader/internal/resourceapi"
	"github.com/azaion/loader/internal/resources"
	"github.com/azaion/loader/internal/testenv"
)

// Sizes around the AES block, around the 3072-byte split limit, and past it.
// 10200 and 10 KiB make ciphertexts just below and at the length past which n is always 3072.
var roundTripSizes = []int{0, 1, 15, 16, 17, 3071, 3072, 3073, 10200, 10 << 10, 1<<20 + 5}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	up := e.service()
	for i, size := range roundTripSizes {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			name := fmt.Sprintf("model-%d.bin", size)
			data := payload(size, uint64(i))
			up.upload(t, e.folder, name, data)
			up.wantCachedFile(t, e.folder, name)

			// Upstream: small is n = min(3072, floor(0.3·len(c))) bytes, big the rest.
			small, big := e.rawParts(e.folder, name)
			c := encryptedSize(int64(size))
			if got, want := int64(len(small)), splitSize(c); got != want {
				t.Errorf("small part: %d bytes, want %d (ciphertext %d)", got, want, c)
			}
			if got, want := int64(len(big)), c-splitSize(c); got != want {
				t.Errorf("big part: %d bytes, want %d", got, want)
			}

			// From the uploader's cache, and from the CDN through a fresh cache.
			wantSame(t, "from the cache", up.read(t, e.folder, name), data)
			down := e.service()
			wantSame(t, "from the CDN", down.read(t, e.folder, name), data)
			down.wantCached(t, e.folder, name)
			if n := down.cdn.gets(e.folder, name+".big"); n != 1 {
				t.Errorf("%d GETs of the big part, want 1", n)
			}
		})
	}
}

// wantCachedFile checks that folder/name's big part and pairing record are in the cache.
func (s *service) wantCachedFile(t testing.TB, folder, name string) {
	t.Helper()
	for _, p := range []string{s.bigPath(folder, name), s.pairPath(folder, name)} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("cache: %v", err)
		}
	}
}

func TestRoundTrip64MiB(t *testing.T) {
	t.Parallel()
	const size = 64 << 20
	e := newEnv(t, envConfig{})
	up := e.service()
	if err := up.Upload(t.Context(), e.folder, "big.bin", stream(size, 64)); err != nil {
		t.Fatal(err)
	}
	want, _, _ := sha(stream(size, 64))
	for _, s := range []*service{up, e.service()} {
		res, err := s.Open(t.Context(), e.folder, "big.bin")
		if err != nil {
			t.Fatal(err)
		}
		if res.Size != size {
			t.Errorf("Size %d, want %d", res.Size, size)
		}
		got, n, err := sha(res)
		res.Close()
		if err != nil || n != size || got != want {
			t.Errorf("read %d bytes (err %v), SHA-256 %x, want %d bytes with %x", n, err, got, size, want)
		}
	}
}

// TestAnySplitPoint: the downloader does not depend on n. The ciphertext is the loader's own
// here (TestOpenSSLEncrypted uses openssl's); it is split by plain slicing.
func TestAnySplitPoint(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	data := payload(50_000, 7)
	up := e.service()
	up.upload(t, e.folder, "whole", data)
	small, big := e.rawParts(e.folder, "whole")
	c := append(small, big...)
	down := e.service()
	for _, n := range []int{0, 1, 15, 16, 17, 100, 3072, 3073, 10000, len(c) - 32, len(c) - 17, len(c) - 16, len(c) - 1, len(c)} {
		name := fmt.Sprintf("split-%d", n)
		e.putParts(e.folder, name, c[:n], c[n:])
		wantSame(t, name, down.read(t, e.folder, name), data)
	}
}

func TestStaleCacheAfterReupload(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	first, other := e.service(), e.service() // two devices
	// The same size: only the pairing tells the versions apart before decryption.
	v1, v2 := payload(100_000, 1), payload(100_000, 2)
	first.upload(t, e.folder, "m", v1)
	wantSame(t, "v1", first.read(t, e.folder, "m"), v1)

	other.upload(t, e.folder, "m", v2)
	wantSame(t, "after the re-upload", first.read(t, e.folder, "m"), v2)
	if n := first.cdn.gets(e.folder, "m.big"); n != 1 {
		t.Errorf("%d GETs of the big part, want 1 refetch", n)
	}
	wantSame(t, "again", first.read(t, e.folder, "m"), v2)
	if n := first.cdn.gets(e.folder, "m.big"); n != 1 {
		t.Errorf("%d GETs of the big part after a second Open, want still 1", n)
	}
	first.wantCached(t, e.folder, "m")

	// The same plaintext uploaded again is still another ciphertext (a fresh IV).
	other.upload(t, e.folder, "m", v2)
	wantSame(t, "same content re-uploaded", first.read(t, e.folder, "m"), v2)
	if n := first.cdn.gets(e.folder, "m.big"); n != 2 {
		t.Errorf("%d GETs of the big part, want 2", n)
	}
}

// TestDamagedCache: a cached big part that is cut short or altered is fetched again, with or
// without its pairing record.
func TestDamagedCache(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	// Every plaintext byte is 'A' (65): a cut of whole blocks makes the last block end in 65,
	// which is no valid padding, so even without a pairing record the damage is detectable.
	data := bytes.Repeat([]byte("A"), 100_000)
	e.service().upload(t, e.folder, "m", data)

	cut := func(n int64) func(*testing.T, string) {
		return func(t *testing.T, p string) {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(p, fi.Size()-n); err != nil {
				t.Fatal(err)
			}
		}
	}
	// garble alters bytes in the middle and the last byte of the next-to-last block, which
	// flips the padding byte: the damage is certain to show in the padding.
	garble := func(t *testing.T, p string) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for i := len(b) / 2; i < len(b)/2+100; i++ {
			b[i] ^= 0x5a
		}
		b[len(b)-17] ^= 0xff
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name     string
		damage   func(*testing.T, string)
		keepPair bool
	}{
		{"cut 1 byte", cut(1), true},
		{"cut 16 bytes", cut(16), true},
		{"cut 1 byte, no pairing record", cut(1), false},
		{"cut 16 bytes, no pairing record", cut(16), false},
		{"garbled", garble, true},
		{"garbled, no pairing record", garble, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := e.service()
			wantSame(t, "first read", s.read(t, e.folder, "m"), data)
			tc.damage(t, s.bigPath(e.folder, "m"))
			if !tc.keepPair {
				if err := os.Remove(s.pairPath(e.folder, "m")); err != nil {
					t.Fatal(err)
				}
			}
			wantSame(t, "after the damage", s.read(t, e.folder, "m"), data)
			if n := s.cdn.gets(e.folder, "m.big"); n != 2 {
				t.Errorf("%d GETs of the big part, want 2 (the first fill and one refetch)", n)
			}
			s.wantCached(t, e.folder, "m")
		})
	}
}

// TestCacheWithoutPairingRecord: a big part put in the cache by hand or an older loader is
// used when it decrypts.
func TestCacheWithoutPairingRecord(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	data := payload(20_000, 3)
	s := e.service()
	s.upload(t, e.folder, "m", data)
	if err := os.Remove(s.pairPath(e.folder, "m")); err != nil {
		t.Fatal(err)
	}
	// Without its record a cached big part is not trusted (CBC cannot tell an old big part
	// from the right one): it is fetched again, once, and the record comes back.
	wantSame(t, "served", s.read(t, e.folder, "m"), data)
	if n := s.cdn.gets(e.folder, "m.big"); n != 1 {
		t.Errorf("%d GETs of the big part, want 1 refetch", n)
	}
	s.wantCached(t, e.folder, "m")
	wantSame(t, "again", s.read(t, e.folder, "m"), data)
	if n := s.cdn.gets(e.folder, "m.big"); n != 1 {
		t.Errorf("%d GETs of the big part after the record was restored, want still 1", n)
	}
}

func TestMinIOStopped(t *testing.T) {
	e := newEnv(t, envConfig{})
	data := payload(200_000, 4)
	cached := e.service()
	cached.upload(t, e.folder, "m", data)
	empty := e.service()
	before := cached.cdn.total()

	testenv.StopMinIO(t)

	wantSame(t, "from the cache", cached.read(t, e.folder, "m"), data)
	if n := cached.cdn.total(); n != before {
		t.Errorf("%d CDN requests while cached, want none", n-before)
	}

	_, err := empty.Open(t.Context(), e.folder, "m")
	if !errors.Is(err, cdn.ErrUnavailable) {
		t.Errorf("Open without cache: %v, want cdn.ErrUnavailable", err)
	}
	empty.wantNoCacheFiles(t)
}

func TestAPIStopped(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	s := e.service()
	s.upload(t, e.folder, "m", payload(5000, 5))
	e.srv.Close()
	_, err := s.Open(t.Context(), e.folder, "m")
	if !errors.Is(err, resourceapi.ErrUnavailable) {
		t.Errorf("Open: %v, want resourceapi.ErrUnavailable", err)
	}
	err = s.Upload(t.Context(), e.folder, "n", bytes.NewReader(payload(5000, 6)))
	if !errors.Is(err, resourceapi.ErrUnavailable) {
		t.Errorf("Upload: %v, want resourceapi.ErrUnavailable", err)
	}
	s.wantCached(t, e.folder, "m") // and nothing of n
}

func TestNotLoggedIn(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{noLogin: true})
	s := e.service()
	if _, err := s.Open(t.Context(), e.folder, "m"); !errors.Is(err, resourceapi.ErrNotLoggedIn) {
		t.Errorf("Open: %v, want resourceapi.ErrNotLoggedIn", err)
	}
	if err := s.Upload(t.Context(), e.folder, "m", strings.NewReader("x")); !errors.Is(err, resourceapi.ErrNotLoggedIn) {
		t.Errorf("Upload: %v, want resourceapi.ErrNotLoggedIn", err)
	}
	s.wantNoCacheFiles(t)
	if n := s.cdn.total(); n != 0 {
		t.Errorf("%d CDN requests, want none", n)
	}
}

func TestInvalidNames(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	e.api.ResetCalls() // the login's
	s := e.service()
	long := strings.Repeat("a", 256)
	for _, bad := range []string{"", "../x", "a/b", `a\b`, "..", ".", ".hidden", "a\x00b", long, strings.Repeat("x", 300)} {
		for _, fn := range []struct{ folder, name string }{{bad, "m"}, {e.folder, bad}} {
			what := fmt.Sprintf("folder %q, name %q", fn.folder, fn.name)
			if _, err := s.Open(t.Context(), fn.folder, fn.name); !errors.Is(err, resources.ErrInvalidName) {
				t.Errorf("Open %s: %v, want ErrInvalidName", what, err)
			}
			if err := s.Upload(t.Context(), fn.folder, fn.name, strings.NewReader("x")); !errors.Is(err, resources.ErrInvalidName) {
				t.Errorf("Upload %s: %v, want ErrInvalidName", what, err)
			}
		}
	}
	if err := resources.ValidateName("filename", strings.Repeat("a", resources.MaxFileNameLen), false); err != nil {
		t.Errorf("a name of %d bytes: %v", resources.MaxFileNameLen, err)
	}
	if entries, err := os.ReadDir(s.cache); err != nil || len(entries) != 0 {
		t.Errorf("cache directory holds %d entries (%v), want none", len(entries), err)
	}
	for _, ep := range []string{refapi.EndpointGet, refapi.EndpointUpload} {
		if n := e.api.Calls(ep); n != 0 {
			t.Errorf("%d calls to %s, want none", n, ep)
		}
	}
	if n := s.cdn.total(); n != 0 {
		t.Errorf("%d CDN requests, want none", n)
	}
}

func TestUploadCDNRefuses(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{cdn: func(c *refapi.CDNSettings) { c.UploaderAccessSecret = "not-the-secret" }})
	s := e.service()
	err := s.Upload(t.Context(), e.folder, "m", bytes.NewReader(payload(20_000, 8)))
	if !errors.Is(err, cdn.ErrDenied) {
		t.Errorf("Upload: %v, want cdn.ErrDenied", err)
	}
	if err != nil && strings.Contains(err.Error(), "not-the-secret") {
		t.Errorf("the error shows the secret: %v", err)
	}
	if n := e.api.Calls(refapi.EndpointUpload); n != 0 {
		t.Errorf("%d small-part uploads, want none", n)
	}
	s.wantNoCacheFiles(t)
}

func TestUploadAPIRefuses(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	s := e.service()
	e.api.SetFault(refapi.EndpointUpload, 500, 1)
	err := s.Upload(t.Context(), e.folder, "m", bytes.NewReader(payload(20_000, 9)))
	if !errors.Is(err, resourceapi.ErrUnavailable) {
		t.Errorf("Upload: %v, want resourceapi.ErrUnavailable", err)
	}
	s.wantNoCacheFiles(t)

	// A failed re-upload leaves the version this device has, which the API still pairs with.
	v1 := payload(20_000, 10)
	s.upload(t, e.folder, "m", v1)
	e.api.SetFault(refapi.EndpointUpload, 500, 1)
	if err := s.Upload(t.Context(), e.folder, "m", bytes.NewReader(payload(20_000, 11))); err == nil {
		t.Fatal("Upload succeeded against a failing API")
	}
	s.wantCached(t, e.folder, "m")
	wantSame(t, "the previous version", s.read(t, e.folder, "m"), v1)
}

func TestUploadReaderFails(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	s := e.service()
	// Before the split point, past it, and past the CDN client's first 16 MiB part.
	for _, n := range []int64{0, 1000, 20_000, 17 << 20} {
		name := fmt.Sprintf("m%d", n)
		r := io.MultiReader(stream(n, 12), iotest.ErrReader(errBoom))
		err := s.Upload(t.Context(), e.folder, name, r)
		if !errors.Is(err, errBoom) {
			t.Errorf("after %d bytes: %v, want the reader's error", n, err)
		}
		if e.objectExists(e.folder, name+".big") {
			t.Errorf("after %d bytes: the CDN holds a big part", n)
		}
	}
	if n := e.api.Calls(refapi.EndpointUpload); n != 0 {
		t.Errorf("%d small-part uploads, want none", n)
	}
	s.wantNoCacheFiles(t)
}

// TestConcurrentOpenSameResource: 32 requests for one uncached resource share one download.
func TestConcurrentOpenSameResource(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	data := payload(1<<20+3, 13)
	e.service().upload(t, e.folder, "m", data)
	s := e.service()
	const n = 32
	openAll(t, s, e.folder, "m", n, data)
	if got := s.cdn.gets(e.folder, "m.big"); got != 1 {
		t.Errorf("%d GETs of the big part, want 1", got)
	}
	s.wantCached(t, e.folder, "m")
}

// lateObserver holds the first two cache misses: the first until the second happened, the
// second until the first request's Open has returned, so its download has ended. So the
// second request joins no flight: it missed the cache before the download ended and asks
// for one after.
type lateObserver struct {
	mu     sync.Mutex
	misses int
	second chan struct{}
	opened chan struct{} // one value per Open that returned
}

func TestOpenLateJoiner(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	data := payload(300_000, 15)
	e.service().upload(t, e.folder, "m", data)
	obs := &lateObserver{second: make(chan struct{}), opened: make(chan struct{}, 2)}
	s := e.serviceWith(func(o *resources.Options) { o.Observer = obs })
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() {
			checkResource(t, s, e.folder, "m", fmt.Sprintf("request %d", i), data, func() { obs.opened <- struct{}{} })
		})
	}
	wg.Wait()
	if obs.misses != 2 {
		t.Errorf("%d cache misses, want 2", obs.misses)
	}
	if got := s.cdn.gets(e.folder, "m.big"); got != 1 {
		t.Errorf("%d GETs of the big part, want 1", got)
	}
}

// openAll opens and reads folder/name n times in parallel and checks each body against want.
func openAll(t *testing.T, s *service, folder, name string, n int, want []byte) {
	t.Helper()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { checkResource(t, s, folder, name, fmt.Sprintf("request %d", i), want, nil) })
	}
	wg.Wait()
}

// checkResource reads folder/name as readResource does and checks the body against want.
func checkResource(t *testing.T, s *service, folder, name, what string, want []byte, opened func()) {
	if b := readResource(t, s.Service, folder, name, what, opened); b != nil {
		wantSame(t, what, b, want)
	}
}

// TestConcurrentRefetch: many requests finding the same damaged cache refetch it once.
func TestConcurrentRefetch(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	data := payload(300_000, 16)
	e.service().upload(t, e.folder, "m", data)
	s := e.service()
	wantSame(t, "fill", s.read(t, e.folder, "m"), data)
	p := s.bigPath(e.folder, "m")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-17] ^= 0xff // the padding byte: certain to fail
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	openAll(t, s, e.folder, "m", 16, data)
	if got := s.cdn.gets(e.folder, "m.big"); got != 2 {
		t.Errorf("%d GETs of the big part, want 2 (the fill and one refetch)", got)
	}
}

func (o *lateObserver) CacheMiss() {
	o.mu.Lock()
	o.misses++
	n := o.misses
	o.mu.Unlock()
	switch n {
	case 1:
		<-o.second
	case 2:
		close(o.second)
		// Only the other request can return from Open now: this one is held here. Once
		// it did, its flight has ended (singleflight forgets a flight before it answers).
		<-o.opened
	}
}

func (*lateObserver) CacheHit()           {}
func (*lateObserver) CDNDownloaded(int64) {}
func (*lateObserver) Served(int64)        {}

func TestConcurrentOpenDifferentResources(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	const n = 32
	up := e.service()
	for i := range n {
		up.upload(t, e.folder, fmt.Sprintf("m%d", i), payload(10_000+i*1000, uint64(100+i)))
	}
	s := e.service()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			name := fmt.Sprintf("m%d", i)
			checkResource(t, s, e.folder, name, name, payload(10_000+i*1000, uint64(100+i)), nil)
		})
	}
	wg.Wait()
	for i := range n {
		if got := s.cdn.gets(e.folder, fmt.Sprintf("m%d.big", i)); got != 1 {
			t.Errorf("m%d: %d GETs of the big part, want 1", i, got)
		}
	}
}

// TestClientGoesAway: a client that reads half of a resource and leaves, or leaves while the
// big part is being downloaded, leaks no goroutine and leaves no temp file.
func TestClientGoesAway(t *testing.T) {
	const size = 64 << 20
	e := newEnv(t, envConfig{})
	up := e.service()
	if err := up.Upload(t.Context(), e.folder, "m", stream(size, 14)); err != nil {
		t.Fatal(err)
	}
	s := e.service()
	halfRead := func() {
		t.Helper()
		res, err := s.Open(t.Context(), e.folder, "m")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.CopyN(io.Discard, res, size/2); err != nil {
			t.Fatal(err)
		}
		if err := res.Close(); err != nil {
			t.Error(err)
		}
		if _, err := res.Read(make([]byte, 1)); err == nil {
			t.Error("Read after Close succeeded")
		}
	}
	// A connection handed back to the pool after a download keeps two goroutines: drop it
	// before each count, so that only goroutines of our own count.
	closeIdle := s.cdn.next.(interface{ CloseIdleConnections() }).CloseIdleConnections
	halfRead() // fills the cache; warms the connection pools
	base := settledGoroutines(closeIdle)

	halfRead() // from the cache
	wantGoroutines(t, base, closeIdle)

	// Leaving while the download runs: the download completes for the others, detached. The
	// CDN's answer is held halfway until the client has gone.
	if err := os.Remove(s.bigPath(e.folder, "m")); err != nil {
		t.Fatal(err)
	}
	h := s.cdn.holdGet(t, e.folder, "m.big", size/2)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() {
		select {
		case <-h.reached:
			cancel()
		case <-ctx.Done():
		}
	}()
	res, err := s.Open(ctx, e.folder, "m")
	if err == nil {
		res.Close()
		t.Fatal("Open succeeded although the client left halfway through the download")
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Open with the client gone: %v, want context.Canceled", err)
	}
	if _, err := os.Stat(s.bigPath(e.folder, "m")); err == nil {
		t.Error("the big part is in the cache although its download is still held")
	}
	h.Release()
	waitFor(t, func() bool {
		_, err := os.Stat(s.bigPath(e.folder, "m"))
		return err == nil && len(s.cacheFiles(t)) == 2
	}, "the download to complete")
	wantGoroutines(t, base, closeIdle)
	s.wantCached(t, e.folder, "m")
	halfRead()
	if n := s.cdn.gets(e.folder, "m.big"); n != 2 {
		t.Errorf("%d GETs of the big part, want 2", n)
	}
	wantGoroutines(t, base, closeIdle)
}

func wantGoroutines(t *testing.T, base int, closeIdle func()) {
	t.Helper()
	waitFor(t, func() bool {
		closeIdle()
		return runtime.NumGoroutine() <= base
	}, fmt.Sprintf("goroutines back to %d", base))
}

// settledGoroutines is the goroutine count once the closed connections' goroutines have
// ended: the first count that the next five polls do not lower.
func settledGoroutines(closeIdle func()) int {
	closeIdle()
	n, same := runtime.NumGoroutine(), 0
	for same < 5 {
		time.Sleep(10 * time.Millisecond)
		closeIdle()
		if m := runtime.NumGoroutine(); m < n {
			n, same = m, 0
		} else {
			same++
		}
	}
	return n
}

func waitFor(t *testing.T, ok func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("timed out waiting for %s (%d goroutines):\n%s", what, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
