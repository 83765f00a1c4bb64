package resources_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/azaion/loader/internal/resources"
)

// TestStaleCacheWithoutRecord: a big part left from an older version, with no pairing record
// (a crash between the rename and the record, or a cache filled by hand), must not be served
// behind the new small part: its last block decrypts fine, so only refetching is safe.
func TestStaleCacheWithoutRecord(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	first, other := e.service(), e.service()
	v1, v2 := payload(100_000, 21), payload(100_000, 22)
	first.upload(t, e.folder, "m", v1)
	other.upload(t, e.folder, "m", v2)
	if err := os.Remove(first.pairPath(e.folder, "m")); err != nil {
		t.Fatal(err)
	}
	wantSame(t, "after a re-upload elsewhere", first.read(t, e.folder, "m"), v2)
	if n := first.cdn.gets(e.folder, "m.big"); n != 1 {
		t.Errorf("%d GETs of the big part, want 1", n)
	}
}

// TestLongNames: long names round-trip although the cache's own file names (".name.big.tmp-…")
// would pass the file system's 255-byte limit. The longest is 249 bytes: the small part is stored
// upstream as name+".small", which the reference API keeps as a file of its own.
func TestLongNames(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	up, down := e.service(), e.service()
	for _, n := range []int{200, 201, 236, 249} {
		name := strings.Repeat("n", n-4) + ".bin"
		data := payload(5000+n, uint64(n))
		up.upload(t, e.folder, name, data)
		wantSame(t, name[:8]+"…", down.read(t, e.folder, name), data)
		wantSame(t, name[:8]+"… from the uploader's cache", up.read(t, e.folder, name), data)
	}
	if n := up.cdn.total(); n == 0 {
		t.Fatal("the uploader made no CDN request at all")
	}
	for _, f := range up.cacheFiles(t) {
		if len(filepath.Base(f)) > 255 {
			t.Errorf("cache file name of %d bytes", len(filepath.Base(f)))
		}
	}
}

// TestStartSweepsLeftovers: temp files an interrupted run left behind are swept when the
// service starts, the cache is kept; but a service sharing the directory with a live one
// (which holds the directory's lock) leaves the live one's temp files alone.
func TestStartSweepsLeftovers(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	s := e.service()
	data := payload(20_000, 23)
	s.upload(t, e.folder, "m", data)
	leftovers := []string{
		filepath.Join(s.cache, e.folder, ".m.big.tmp-123456"),
		filepath.Join(s.cache, e.folder, ".m.big.pair.tmp-99"),
	}
	write := func() {
		for _, p := range leftovers {
			if err := os.WriteFile(p, []byte("half"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	write()
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	s.wantCached(t, e.folder, "m")
	wantSame(t, "served from the cache", s.read(t, e.folder, "m"), data)
	if n := s.cdn.gets(e.folder, "m.big"); n != 0 {
		t.Errorf("%d GETs: the sweep removed the cache", n)
	}

	write() // now the live service's own temp files
	other := e.serviceWith(func(o *resources.Options) { o.CacheDir = s.cache })
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	for _, p := range leftovers {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("a second service swept the live one's temp file: %v", err)
		}
	}
	// Once the first is gone, the next start sweeps.
	s.Close()
	other.Close()
	third := e.serviceWith(func(o *resources.Options) { o.CacheDir = s.cache })
	if err := third.Start(); err != nil {
		t.Fatal(err)
	}
	for _, p := range leftovers {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s survived a start with nobody else using the cache", p)
		}
	}
}

// TestPreload: a big part seeded offline is served without the CDN.
func TestPreload(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	data := payload(50_000, 24)
	e.service().upload(t, e.folder, "m", data)
	small, big := e.rawParts(e.folder, "m")
	s := e.service()
	if err := s.Preload(e.folder, "m", small, bytes.NewReader(big)); err != nil {
		t.Fatal(err)
	}
	wantSame(t, "preloaded", s.read(t, e.folder, "m"), data)
	if n := s.cdn.total(); n != 0 {
		t.Errorf("%d CDN requests, want none", n)
	}
	if err := s.Preload("../x", "m", small, bytes.NewReader(big)); !errors.Is(err, resources.ErrInvalidName) {
		t.Errorf("Preload with a path-like folder: %v", err)
	}
}

// TestFolderMustBeBucketName: a folder that is a valid name but not a CDN bucket name is a 422
// (ErrInvalidName) before any I/O, not the CDN's error as a 500.
func TestFolderMustBeBucketName(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	s := e.service()
	for _, folder := range []string{"Models", "ab", "a_b", "-models", "models-", strings.Repeat("m", 64)} {
		if _, err := s.Open(t.Context(), folder, "m"); !errors.Is(err, resources.ErrInvalidName) {
			t.Errorf("Open in folder %q: %v, want ErrInvalidName", folder, err)
		}
		if err := s.Upload(t.Context(), folder, "m", strings.NewReader("x")); !errors.Is(err, resources.ErrInvalidName) {
			t.Errorf("Upload to folder %q: %v, want ErrInvalidName", folder, err)
		}
	}
	if n := s.cdn.total(); n != 0 {
		t.Errorf("%d CDN requests for invalid folders", n)
	}
	s.wantNoCacheFiles(t)
}
