package resources_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	mathrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/azaion/loader/internal/cdn"
	"github.com/azaion/loader/internal/refapi"
	"github.com/azaion/loader/internal/resourceapi"
	"github.com/azaion/loader/internal/resources"
	"github.com/azaion/loader/internal/streams"
	"github.com/azaion/loader/internal/testenv"
)

const (
	testEmail    = "uploader@azaion.local"
	testPassword = "correct horse battery staple"
	testHardware = "CPU: Test CPU. GPU: Unknown. Memory: 1024. DriveSerial: RES-TEST-1"
)

// env is one test's world: the reference Resource API over real HTTP, a logged-in client of
// it, the test MinIO and a fresh bucket (= folder) on it.
type env struct {
	t      *testing.T
	minio  testenv.MinIOServer
	api    *refapi.Server
	srv    *httptest.Server
	client *resourceapi.Client
	folder string
}

// envConfig changes what the reference API serves as cdn.yaml.
type envConfig struct {
	cdn func(*refapi.CDNSettings)
	// noLogin leaves the client logged out.
	noLogin bool
}

func newEnv(t *testing.T, cfg envConfig) *env {
	t.Helper()
	m := testenv.MinIO(t)
	settings := refapi.CDNSettings{
		Host:                   m.URL(),
		DownloaderAccessKey:    m.AccessKey,
		DownloaderAccessSecret: m.SecretKey,
		UploaderAccessKey:      m.AccessKey,
		UploaderAccessSecret:   m.SecretKey,
	}
	if cfg.cdn != nil {
		cfg.cdn(&settings)
	}
	api, err := refapi.New(refapi.Config{
		Users:   []refapi.User{{Email: testEmail, Password: testPassword, Role: "ResourceUploader"}},
		DataDir: t.TempDir(),
		CDN:     settings,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	client, err := resourceapi.New(srv.URL, testHardware, resourceapi.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.noLogin {
		if err := client.Login(t.Context(), testEmail, testPassword); err != nil {
			t.Fatal(err)
		}
	}
	return &env{t: t, minio: m, api: api, srv: srv, client: client, folder: m.Bucket(t, "res")}
}

// counter is an http.RoundTripper that counts the CDN requests a Service makes. It can hold
// the answer to one GET halfway (holdGet).
type counter struct {
	next http.RoundTripper
	mu   sync.Mutex
	reqs []string // "METHOD /path"
	rng  []string // the Range header of each request ("" for none)
	got  int64    // body bytes of GET answers read by the client
	hold *hold    // for the next GET of hold.path
}

// hold stops the body of one GET after a number of bytes until it is released.
type hold struct {
	path    string
	after   int64
	reached chan struct{} // closed when the body got to the point
	release chan struct{}
	rl      sync.Once
}

// Release lets the held body go on.
func (h *hold) Release() { h.rl.Do(func() { close(h.release) }) }

// holdGet makes the body of the next GET of folder/object stop after the given number of
// bytes until the returned hold is released (at the latest when t ends).
func (c *counter) holdGet(t testing.TB, folder, object string, after int64) *hold {
	h := &hold{path: "/" + folder + "/" + object, after: after,
		reached: make(chan struct{}), release: make(chan struct{})}
	t.Cleanup(h.Release)
	c.mu.Lock()
	c.hold = h
	c.mu.Unlock()
	return h
}

func newCounter(t testing.TB) *counter {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	return &counter{next: tr}
}

func (c *counter) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.reqs = append(c.reqs, r.Method+" "+r.URL.Path)
	c.rng = append(c.rng, r.Header.Get("Range"))
	h := c.hold
	if h != nil && r.Method == http.MethodGet && r.URL.Path == h.path {
		c.hold = nil
	} else {
		h = nil
	}
	c.mu.Unlock()
	resp, err := c.next.RoundTrip(r)
	if err == nil && r.Method == http.MethodGet {
		resp.Body = streams.ReadCloser(streams.OnRead(resp.Body, c.count), resp.Body)
	}
	if err == nil && h != nil {
		resp.Body = testenv.HeldBody(resp.Body, h.after, h.release, r.Context().Done(), func() { close(h.reached) })
	}
	return resp, err
}

// count adds n GET body bytes to got.
func (c *counter) count(n int) {
	c.mu.Lock()
	c.got += int64(n)
	c.mu.Unlock()
}

// ranges returns the Range headers of the GETs of folder/object, in order.
func (c *counter) ranges(folder, object string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for i, r := range c.reqs {
		if r == "GET /"+folder+"/"+object {
			out = append(out, c.rng[i])
		}
	}
	return out
}

// received is how many body bytes of GET answers were read.
func (c *counter) received() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.got
}

// gets counts the GETs of folder/object.
func (c *counter) gets(folder, object string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, r := range c.reqs {
		if r == "GET /"+folder+"/"+object {
			n++
		}
	}
	return n
}

func (c *counter) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.reqs)
}

// service is a Service of e with its own cache directory and request counter. The CDN client
// gives up quickly, so that fault tests do not wait through the default backoff.
type service struct {
	*resources.Service
	cache string
	cdn   *counter
}

func (e *env) service() *service { return e.serviceWith(nil) }

// serviceWith is service with Options changed by opt.
func (e *env) serviceWith(opt func(*resources.Options)) *service {
	e.t.Helper()
	c := newCounter(e.t)
	cache := e.t.TempDir()
	opts := resources.Options{
		CacheDir:   cache,
		CDNOptions: cdn.Options{Transport: c, MaxResumes: 1, Backoff: 10 * time.Millisecond, StallTimeout: 10 * time.Second},
	}
	if opt != nil {
		opt(&opts)
	}
	svc, err := resources.New(e.client, opts)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { svc.Close() })
	return &service{Service: svc, cache: opts.CacheDir, cdn: c}
}

func (s *service) bigPath(folder, name string) string {
	return filepath.Join(s.cache, folder, name+".big")
}

func (s *service) pairPath(folder, name string) string {
	return filepath.Join(s.cache, folder, "."+name+".big.pair")
}

// cacheFiles lists the files (not directories) under the cache directory, relative to it.
func (s *service) cacheFiles(t testing.TB) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(s.cache, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(s.cache, p)
		if !d.IsDir() && rel != ".lock" { // the lock of a started service
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func (s *service) wantNoCacheFiles(t testing.TB) {
	t.Helper()
	if files := s.cacheFiles(t); len(files) != 0 {
		t.Errorf("cache holds %q, want nothing", files)
	}
}

// wantCached checks that the cache holds exactly folder/name's big part and pairing record.
func (s *service) wantCached(t testing.TB, folder, name string) {
	t.Helper()
	want := []string{filepath.Join(folder, "."+name+".big.pair"), filepath.Join(folder, name+".big")}
	got := s.cacheFiles(t)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("cache holds %q, want %q", got, want)
	}
}

// payload returns n deterministic pseudo-random bytes.
func payload(n int, seed uint64) []byte {
	b := make([]byte, n)
	_, _ = prng(seed).Read(b)
	return b
}

func prng(seed uint64) *mathrand.ChaCha8 {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	s[31] = 0x5a
	return mathrand.NewChaCha8(s)
}

// stream is n pseudo-random bytes of seed, generated as they are read.
func stream(n int64, seed uint64) io.Reader { return io.LimitReader(prng(seed), n) }

func sha(r io.Reader) ([32]byte, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	var sum [32]byte
	h.Sum(sum[:0])
	return sum, n, err
}

// upload uploads data as folder/name through s.
func (s *service) upload(t testing.TB, folder, name string, data []byte) {
	t.Helper()
	if err := s.Upload(t.Context(), folder, name, bytes.NewReader(data)); err != nil {
		t.Fatalf("Upload %s/%s: %v", folder, name, err)
	}
}

// read opens folder/name through s and returns all of it, checking Size against it.
func (s *service) read(t testing.TB, folder, name string) []byte {
	t.Helper()
	res, err := s.Open(t.Context(), folder, name)
	if err != nil {
		t.Fatalf("Open %s/%s: %v", folder, name, err)
	}
	defer res.Close()
	b, err := io.ReadAll(res)
	if err != nil {
		t.Fatalf("read %s/%s: %v", folder, name, err)
	}
	if int64(len(b)) != res.Size {
		t.Errorf("%s/%s: Size %d, read %d bytes", folder, name, res.Size, len(b))
	}
	return b
}

func wantSame(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Errorf("%s: got %d bytes, want %d; first difference at byte %d", what, len(got), len(want), i)
	}
}

// rawParts returns what folder/name is stored as upstream: the small part as the API keeps
// it and the big object as MinIO keeps it, read past the loader's code.
func (e *env) rawParts(folder, name string) (small, big []byte) {
	e.t.Helper()
	small, err := os.ReadFile(e.api.ResourcePath(folder, name+".small"))
	if err != nil {
		e.t.Fatalf("small part on the API: %v", err)
	}
	obj, err := e.minio.Client(e.t).GetObject(e.t.Context(), folder, name+".big", minio.GetObjectOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	defer obj.Close()
	big, err = io.ReadAll(obj)
	if err != nil {
		e.t.Fatalf("big part on MinIO: %v", err)
	}
	return small, big
}

// putParts stores small and big as folder/name's parts, past the loader's code.
func (e *env) putParts(folder, name string, small, big []byte) {
	e.t.Helper()
	if err := e.api.PutResource(folder, name+".small", bytes.NewReader(small)); err != nil {
		e.t.Fatal(err)
	}
	e.minio.PutObject(e.t, folder, name+".big", big)
}

// objectExists reports whether MinIO holds folder/object.
func (e *env) objectExists(folder, object string) bool {
	e.t.Helper()
	_, err := e.minio.Client(e.t).StatObject(e.t.Context(), folder, object, minio.StatObjectOptions{})
	if err == nil {
		return true
	}
	if code := minio.ToErrorResponse(err).Code; code == "NoSuchKey" || code == "NoSuchBucket" {
		return false
	}
	e.t.Fatalf("stat %s/%s: %v", folder, object, err)
	return false
}

// splitSize is SPEC §5's n = min(3072, floor(0.3·len(c))), in integers.
func splitSize(cipherLen int64) int64 { return min(3072, cipherLen*3/10) }

// encryptedSize is len(IV ‖ CBC(PKCS#7(plain))) from SPEC §4, independently of security.
func encryptedSize(plain int64) int64 { return 16 + (plain/16+1)*16 }

var errBoom = errors.New("boom: the uploading client went away")

// readResource opens folder/name on s and reads it whole, as a /load would. A failure is an
// error of the test (from any goroutine) naming what; after a failed Open it returns nil.
// opened, when not nil, runs once Open has returned.
func readResource(t *testing.T, s *resources.Service, folder, name, what string, opened func()) []byte {
	res, err := s.Open(t.Context(), folder, name)
	if opened != nil {
		opened()
	}
	if err != nil {
		t.Errorf("%s: %v", what, err)
		return nil
	}
	defer res.Close()
	b, err := io.ReadAll(res)
	if err != nil {
		t.Errorf("%s: read: %v", what, err)
	}
	return b
}
