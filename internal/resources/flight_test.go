package resources_test

// Tests of shared downloads and prefetch with a CDN in memory, in a synctest bubble: every
// goroutine's waiting is observed, not guessed with sleeps.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/azaion/loader/internal/cache"
	"github.com/azaion/loader/internal/cdn"
	"github.com/azaion/loader/internal/resources"
)

// memStore is a CDN in memory. A download of an object with a gate writes its first chunk and
// then waits for the gate to close before the rest.
type memStore struct {
	mu    sync.Mutex
	objs  map[string][]byte
	meta  map[string]string
	etags map[string]int
	gates map[string]chan struct{}
	gets  map[string]int
}

func newMemStore() *memStore {
	return &memStore{objs: map[string][]byte{}, meta: map[string]string{}, etags: map[string]int{},
		gates: map[string]chan struct{}{}, gets: map[string]int{}}
}

func (m *memStore) Stat(_ context.Context, bucket, object string) (cdn.Object, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := bucket + "/" + object
	b, ok := m.objs[k]
	if !ok {
		return cdn.Object{}, cdn.ErrNotFound
	}
	return cdn.Object{Size: int64(len(b)), ETag: fmt.Sprint(m.etags[k]), SmallSHA256: m.meta[k]}, nil
}

func (m *memStore) DownloadFrom(ctx context.Context, bucket, object string, w io.Writer, from cdn.Resume) (int64, error) {
	m.mu.Lock()
	k := bucket + "/" + object
	b, ok := m.objs[k]
	gate := m.gates[k]
	m.gets[k]++
	m.mu.Unlock()
	if !ok {
		return 0, cdn.ErrNotFound
	}
	var n int64
	for off := from.Offset; off < int64(len(b)); off += 64 << 10 {
		if off > from.Offset && gate != nil {
			select {
			case <-gate:
			case <-ctx.Done():
				return n, ctx.Err()
			}
		}
		w2, err := w.Write(b[off:min(off+64<<10, int64(len(b)))])
		n += int64(w2)
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (m *memStore) Upload(_ context.Context, bucket, object string, r io.ReaderAt, size int64, meta map[string]string) error {
	b, err := io.ReadAll(io.NewSectionReader(r, 0, size))
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	k := bucket + "/" + object
	m.objs[k], m.meta[k] = b, meta[cdn.MetaSmallSHA256]
	m.etags[k]++
	return nil
}

func (m *memStore) gate(bucket, object string) chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	g := make(chan struct{})
	m.gates[bucket+"/"+object] = g
	return g
}

// memWorld is a Resource API and a CDN in memory with resources uploaded to them.
type memWorld struct {
	api   *memAPI
	store *memStore
	data  map[string][]byte
}

func newMemWorld(t *testing.T, names ...string) *memWorld {
	t.Helper()
	w := &memWorld{api: &memAPI{files: map[string][]byte{}}, store: newMemStore(), data: map[string][]byte{}}
	up := w.service(t, t.TempDir(), nil)
	for i, n := range names {
		w.data[n] = payload(300_000+i, uint64(50+i))
		if err := up.Upload(t.Context(), "models", n, bytes.NewReader(w.data[n])); err != nil {
			t.Fatal(err)
		}
	}
	return w
}

func (w *memWorld) service(t *testing.T, dir string, opt func(*resources.Options)) *resources.Service {
	t.Helper()
	o := resources.Options{CacheDir: dir, NewStore: func(cdn.Config) (resources.Store, error) { return w.store, nil }}
	if opt != nil {
		opt(&o)
	}
	s, err := resources.New(w.api, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func partialBytes(t *testing.T, dir, name string) int64 {
	t.Helper()
	fi, err := os.Stat(filepath.Join(dir, "models", "."+name+".big.partial"))
	if err != nil {
		return -1
	}
	return fi.Size()
}

func states(t *testing.T, s *resources.Service) []string {
	t.Helper()
	st, err := s.CacheStatus()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range st.Parts {
		out = append(out, p.Name+" "+string(p.State))
	}
	return out
}

// TestPrefetchYieldsToLoad: while a /load waits on a CDN download, prefetch does not move a
// byte; when the load's download is done, prefetch goes on. A /load that needs the part
// prefetch is fetching joins that download and makes it go ahead at once.
func TestPrefetchYieldsToLoad(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newMemWorld(t, "l", "p", "q")
		dir := t.TempDir()
		s := w.service(t, dir, func(o *resources.Options) { o.Prefetch = []string{"models/p", "models/q"} })
		if err := s.Start(); err != nil {
			t.Fatal(err)
		}
		loadGate := w.store.gate("models", "l.big")
		loaded := make(chan []byte)
		go func() { loaded <- readResource(t, s, "models", "l", "l", nil) }()
		synctest.Wait() // the load's download wrote its first chunk and waits for the CDN

		s.LoggedIn()
		synctest.Wait() // prefetch has p's answer in hand and waits for the load
		if n := partialBytes(t, dir, "p"); n != 0 {
			t.Fatalf("prefetch moved p while a load was downloading: its partial holds %d bytes (-1: none, p is complete)", n)
		}
		if got := states(t, s); !slices.Equal(got, []string{"l downloading", "p downloading", "q queued"}) {
			t.Errorf("GET /cache while prefetch yields: %q", got)
		}
		// A load of p joins prefetch's download: it goes on although l still waits.
		wantSame(t, "p through prefetch's download", readResource(t, s, "models", "p", "p", nil), w.data["p"])
		synctest.Wait() // prefetch is on q now, and waits for l again
		if n := partialBytes(t, dir, "q"); n != 0 {
			t.Fatalf("prefetch moved q while a load was downloading: its partial holds %d bytes (-1: none, q is complete)", n)
		}

		close(loadGate)
		wantSame(t, "l", <-loaded, w.data["l"])
		synctest.Wait() // prefetch finished q
		if got := states(t, s); !slices.Equal(got, []string{"l cached", "p cached", "q cached"}) {
			t.Errorf("GET /cache after prefetch: %q", got)
		}
		if n := w.store.gets["models/p.big"]; n != 1 {
			t.Errorf("%d downloads of p, want 1 shared by prefetch and the load", n)
		}
	})
}

// TestPrefetchFolder: PREFETCH folder/* fetches every resource the folder lists (NAME.small is
// resource NAME), after a login and again every interval, and only what is missing; the
// parts are pinned against eviction.
func TestPrefetchFolder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newMemWorld(t, "a", "b", "c")
		dir := t.TempDir()
		s := w.service(t, dir, func(o *resources.Options) {
			o.Prefetch = []string{"models/*"}
			o.CacheMax = 1 // nothing but pinned parts could stay
		})
		if err := s.Start(); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got := states(t, s); len(got) != 0 {
			t.Fatalf("prefetch ran before any login: %q", got)
		}
		s.LoggedIn()
		synctest.Wait()
		if got := states(t, s); !slices.Equal(got, []string{"a cached", "b cached", "c cached"}) {
			t.Fatalf("after a login: %q", got)
		}
		// A resource added upstream comes with the next round, an hour later.
		up := w.service(t, t.TempDir(), nil)
		if err := up.Upload(t.Context(), "models", "d", bytes.NewReader(payload(1000, 9))); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got := states(t, s); len(got) != 3 {
			t.Fatalf("before the interval: %q", got)
		}
		time.Sleep(resources.DefaultPrefetchInterval)
		synctest.Wait()
		if got := states(t, s); !slices.Equal(got, []string{"a cached", "b cached", "c cached", "d cached"}) {
			t.Fatalf("after the interval: %q", got)
		}
		for _, n := range []string{"a", "b", "c"} {
			if g := w.store.gets["models/"+n+".big"]; g != 1 {
				t.Errorf("%s downloaded %d times, want once", n, g)
			}
		}
	})
}

// TestCompletePartial: a partial download that was complete when the loader stopped (all its
// bytes durable, not yet renamed into place) is committed without asking the CDN for more.
func TestCompletePartial(t *testing.T) {
	w := newMemWorld(t, "m")
	dir := t.TempDir()
	big := w.store.objs["models/m.big"]
	p, err := cache.New(cache.Options{Dir: dir}).OpenPartial("models", "m")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Begin(int64(len(big)), "1"); err != nil { // memStore's first ETag
		t.Fatal(err)
	}
	if _, err := p.Write(big); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(true); err != nil {
		t.Fatal(err)
	}
	s := w.service(t, dir, nil)
	wantSame(t, "from the complete partial", readResource(t, s, "models", "m", "m", nil), w.data["m"])
	if n := w.store.gets["models/m.big"]; n != 0 {
		t.Errorf("%d downloads of a part that was all on disk", n)
	}
}

// shortStore is memStore behind a CDN whose Stat, while short is set, says each object has one
// byte more than any download of it delivers.
type shortStore struct {
	*memStore
	short bool
}

func (s *shortStore) Stat(ctx context.Context, bucket, object string) (cdn.Object, error) {
	obj, err := s.memStore.Stat(ctx, bucket, object)
	if s.short {
		obj.Size++
	}
	return obj, err
}

// TestFailedCommitReleasesThePart: a download that cannot be committed (fewer bytes than the
// object's size) fails its /load, and does not keep the part for itself: once the CDN is
// right again, the next /load downloads and serves it.
func TestFailedCommitReleasesThePart(t *testing.T) {
	w := newMemWorld(t, "m")
	st := &shortStore{memStore: w.store, short: true}
	s := w.service(t, t.TempDir(), func(o *resources.Options) {
		o.NewStore = func(cdn.Config) (resources.Store, error) { return st, nil }
	})
	if _, err := s.Open(t.Context(), "models", "m"); err == nil {
		t.Fatal("Open succeeded although the download was a byte short of the object")
	}
	st.short = false
	wantSame(t, "after the failed commit", readResource(t, s, "models", "m", "m", nil), w.data["m"])
}
