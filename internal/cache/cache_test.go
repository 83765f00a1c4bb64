package cache_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/azaion/loader/internal/cache"
)

func payload(n int, seed byte) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func newCache(t *testing.T, opts cache.Options) *cache.Cache {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	c := cache.New(opts)
	t.Cleanup(func() { c.Close() })
	return c
}

// put commits data as folder/name's big part through a Temp, paired with small.
func put(t *testing.T, c *cache.Cache, folder, name string, data []byte, small string) {
	t.Helper()
	tmp, err := c.NewTemp(folder, name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tmp.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := tmp.Commit(small); err != nil {
		t.Fatal(err)
	}
}

// read opens folder/name and returns its bytes, whether it is paired with small and whether
// it verifies.
func read(t *testing.T, c *cache.Cache, folder, name, small string) ([]byte, bool, error) {
	t.Helper()
	p, err := c.Open(folder, name)
	if err != nil {
		t.Fatalf("Open %s/%s: %v", folder, name, err)
	}
	defer p.Close()
	b, err := io.ReadAll(io.NewSectionReader(p, 0, p.Size))
	if err != nil {
		t.Fatal(err)
	}
	return b, p.PairedWith(small), c.Verify(p)
}

func TestCommitAndOpen(t *testing.T) {
	c := newCache(t, cache.Options{})
	data := payload(100_000, 1)
	if _, err := c.Open("models", "m"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Open of nothing: %v", err)
	}
	put(t, c, "models", "m", data, "aa")
	got, paired, err := read(t, c, "models", "m", "aa")
	if !bytes.Equal(got, data) || !paired || err != nil {
		t.Fatalf("read back: equal %v, paired %v, verify %v", bytes.Equal(got, data), paired, err)
	}
	if _, paired, _ := read(t, c, "models", "m", "bb"); paired {
		t.Error("paired with another small part")
	}
	// The record on disk names the small part, the size and the part's own SHA-256.
	rec, err := os.ReadFile(filepath.Join(c.Dir(), "models", ".m.big.pair"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"smallSha256":"aa"`, `"size":100000`, `"sha256":"` + sum(data) + `"`} {
		if !strings.Contains(string(rec), want) {
			t.Errorf("record %s lacks %s", rec, want)
		}
	}
}

// TestVerifyFindsDamage: a flipped byte in the middle of a part (which CBC padding cannot
// see) fails verification, whether the file's mtime changed or the process restarted (a new
// Cache); a part replaced by another of the same size and mtime fails too.
func TestVerifyFindsDamage(t *testing.T) {
	dir := t.TempDir()
	c := newCache(t, cache.Options{Dir: dir})
	data := payload(1<<20, 2)
	put(t, c, "models", "m", data, "aa")
	if _, _, err := read(t, c, "models", "m", "aa"); err != nil {
		t.Fatalf("fresh part: %v", err)
	}
	big := filepath.Join(dir, "models", "m.big")
	fi, _ := os.Stat(big)
	damaged := bytes.Clone(data)
	damaged[len(damaged)/2] ^= 0x01
	if err := os.WriteFile(big, damaged, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := read(t, c, "models", "m", "aa"); !errors.Is(err, cache.ErrCorrupt) {
		t.Errorf("flipped byte, mtime changed: %v, want ErrCorrupt", err)
	}
	// The mtime put back as it was: the change time still tells, and so does a new process.
	os.Chtimes(big, fi.ModTime(), fi.ModTime())
	if _, _, err := read(t, c, "models", "m", "aa"); !errors.Is(err, cache.ErrCorrupt) {
		t.Errorf("flipped byte, mtime restored: %v, want ErrCorrupt", err)
	}
	if _, _, err := read(t, newCache(t, cache.Options{Dir: dir}), "models", "m", "aa"); !errors.Is(err, cache.ErrCorrupt) {
		t.Errorf("flipped byte, after a restart: %v, want ErrCorrupt", err)
	}
	// Another resource's part of the same size, renamed into place.
	put(t, c, "models", "other", payload(1<<20, 3), "cc")
	put(t, c, "models", "m", data, "aa")
	if err := os.Rename(filepath.Join(dir, "models", "other.big"), big); err != nil {
		t.Fatal(err)
	}
	if _, _, err := read(t, c, "models", "m", "aa"); !errors.Is(err, cache.ErrCorrupt) {
		t.Errorf("another part of the same size: %v, want ErrCorrupt", err)
	}
}

// TestOldRecordIsNotTrusted: a record of the older form (no SHA-256 of the part) counts as none.
func TestOldRecordIsNotTrusted(t *testing.T) {
	c := newCache(t, cache.Options{})
	put(t, c, "models", "m", payload(5000, 4), "aa")
	os.WriteFile(filepath.Join(c.Dir(), "models", ".m.big.pair"), []byte("aa 5000\n"), 0o600)
	p, err := c.Open("models", "m")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.Record != nil || p.PairedWith("aa") {
		t.Errorf("an old record is trusted: %+v", p.Record)
	}
}

// TestPartialResume: a partial keeps exactly the bytes counted durable; the rest (written
// after the last fsync) is cut off when it is opened again.
func TestPartialResume(t *testing.T) {
	dir := t.TempDir()
	c := newCache(t, cache.Options{Dir: dir, SyncEvery: 1000})
	data := payload(10_000, 5)
	p, err := c.OpenPartial("models", "m")
	if err != nil {
		t.Fatal(err)
	}
	if p.Offset() != 0 {
		t.Fatalf("a new partial at %d", p.Offset())
	}
	if err := p.Begin(int64(len(data)), "etag-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Write(data[:2500]); err != nil { // fsynced at 2500 (past 1000 since the last)
		t.Fatal(err)
	}
	if _, err := p.Write(data[2500:2900]); err != nil { // not fsynced
		t.Fatal(err)
	}
	if _, err := c.OpenPartial("models", "m"); err == nil {
		t.Fatal("two writers of one partial")
	}
	// A crash: the process is gone without Close. A new process opens it again.
	c2 := newCache(t, cache.Options{Dir: dir, SyncEvery: 1000})
	p2, err := c2.OpenPartial("models", "m")
	if err != nil {
		t.Fatal(err)
	}
	if p2.Offset() != 2500 || p2.ETag() != "etag-1" || p2.Size() != int64(len(data)) {
		t.Fatalf("resumed at %d of %d, ETag %q; want 2500 of %d, etag-1", p2.Offset(), p2.Size(), p2.ETag(), len(data))
	}
	if err := p2.Begin(int64(len(data)), "etag-1"); err != nil || p2.Offset() != 2500 {
		t.Fatalf("Begin with the same object: %v, offset %d", err, p2.Offset())
	}
	if _, err := p2.Write(data[2500:]); err != nil {
		t.Fatal(err)
	}
	if err := p2.Commit("aa"); err != nil {
		t.Fatal(err)
	}
	got, paired, verr := read(t, c2, "models", "m", "aa")
	if !bytes.Equal(got, data) || !paired || verr != nil {
		t.Fatalf("resumed part: equal %v, paired %v, verify %v", bytes.Equal(got, data), paired, verr)
	}
	if names := files(t, dir); !slices.Equal(names, []string{"models/.m.big.pair", "models/m.big"}) {
		t.Errorf("cache holds %v after the commit", names)
	}
}

// TestPartialOfAnotherObject: a partial of an object that changed (another ETag) starts from
// zero; Close(keep) keeps a partial for later, Close without keep removes it.
func TestPartialOfAnotherObject(t *testing.T) {
	dir := t.TempDir()
	c := newCache(t, cache.Options{Dir: dir, SyncEvery: 100})
	p, _ := c.OpenPartial("models", "m")
	p.Begin(1000, "v1")
	p.Write(payload(600, 6))
	if err := p.Close(true); err != nil {
		t.Fatal(err)
	}
	p, _ = c.OpenPartial("models", "m")
	if p.Offset() != 600 {
		t.Fatalf("kept partial at %d, want 600 (Close fsyncs)", p.Offset())
	}
	if err := p.Begin(1000, "v2"); err != nil || p.Offset() != 0 {
		t.Fatalf("Begin with another ETag: %v, offset %d; want 0", err, p.Offset())
	}
	p.Write(payload(300, 7))
	p.Close(false)
	if names := files(t, dir); len(names) != 0 {
		t.Errorf("cache holds %v after an abandoned partial", names)
	}
}

func TestListStates(t *testing.T) {
	c := newCache(t, cache.Options{SyncEvery: 100})
	put(t, c, "models", "done", payload(700, 8), "aa")
	p, _ := c.OpenPartial("models", "half")
	p.Begin(1000, "e")
	p.Write(payload(400, 9))
	q, _ := c.OpenPartial("other", "left")
	q.Begin(900, "e")
	q.Write(payload(200, 10))
	q.Close(true)
	entries, err := c.List()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Folder+"/"+e.Name+" "+string(e.State)+" "+strconv.FormatInt(e.Bytes, 10)+"/"+strconv.FormatInt(e.Size, 10))
	}
	want := []string{"models/done cached 700/700", "models/half downloading 400/1000", "other/left partial 200/900"}
	if !slices.Equal(got, want) {
		t.Errorf("List = %q, want %q", got, want)
	}
	p.Close(false)
}

// TestEvictLRU: over Max, the least recently used parts go first; a part being read, a
// pinned part and the part just added stay.
func TestEvictLRU(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { now = now.Add(time.Minute); return now }
	c := newCache(t, cache.Options{Max: 3000, Now: clock, Pinned: func(folder, name string) bool { return name == "pinned" }})
	put(t, c, "models", "pinned", payload(1000, 1), "p")
	put(t, c, "models", "a", payload(1000, 2), "a")
	put(t, c, "models", "b", payload(1000, 3), "b") // 3000: fits
	reading, err := c.Open("models", "a")           // a is now the most recently used, and open
	if err != nil {
		t.Fatal(err)
	}
	put(t, c, "models", "c", payload(1000, 4), "c") // 4000: b (LRU, unpinned, unread) goes
	if got := names(t, c); !slices.Equal(got, []string{"a", "c", "pinned"}) {
		t.Fatalf("after c: %v, want a c pinned", got)
	}
	put(t, c, "models", "d", payload(1000, 5), "d") // 4000: a is read, pinned is pinned: c goes
	if got := names(t, c); !slices.Equal(got, []string{"a", "d", "pinned"}) {
		t.Fatalf("after d: %v, want a d pinned", got)
	}
	b, err := io.ReadAll(io.NewSectionReader(reading, 0, reading.Size))
	if err != nil || !bytes.Equal(b, payload(1000, 2)) {
		t.Fatal("the part being read changed under its reader")
	}
	reading.Close()
	put(t, c, "models", "e", payload(1000, 6), "e") // a is free now, and the oldest
	if got := names(t, c); !slices.Equal(got, []string{"d", "e", "pinned"}) {
		t.Fatalf("after e: %v, want d e pinned", got)
	}
}

func names(t *testing.T, c *cache.Cache) []string {
	t.Helper()
	entries, err := c.List()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name)
	}
	return out
}

func TestCheckSpace(t *testing.T) {
	c := newCache(t, cache.Options{Dir: filepath.Join(t.TempDir(), "not", "yet")})
	free, err := c.Free()
	if err != nil || free <= 0 {
		t.Fatalf("Free = %d, %v", free, err)
	}
	if err := c.CheckSpace("models", "m", 1); err != nil {
		t.Errorf("1 byte: %v", err)
	}
	err = c.CheckSpace("models", "m", 1<<62)
	var se *cache.SpaceError
	if !errors.Is(err, cache.ErrNoSpace) || !errors.As(err, &se) || se.Need != 1<<62 || se.Have <= 0 {
		t.Fatalf("CheckSpace of 4 EiB: %v", err)
	}
	if !strings.HasPrefix(err.Error(), "not enough disk space") || !strings.Contains(err.Error(), "need 4611686018427387904 bytes, have ") {
		t.Errorf("message %q", err)
	}
}

// TestSweepPartials: partials nobody asked for in 7 days go, younger ones stay.
func TestSweepPartials(t *testing.T) {
	dir := t.TempDir()
	c := newCache(t, cache.Options{Dir: dir, SyncEvery: 10})
	for _, n := range []string{"old", "young"} {
		p, _ := c.OpenPartial("models", n)
		p.Begin(100, "e")
		p.Write(payload(50, 1))
		p.Close(true)
	}
	eightDays := time.Now().Add(-8 * 24 * time.Hour)
	for _, f := range []string{".old.big.partial", ".old.big.partial.meta"} {
		os.Chtimes(filepath.Join(dir, "models", f), eightDays, eightDays)
	}
	c.SweepPartials()
	if got := files(t, dir); !slices.Equal(got, []string{"models/.young.big.partial", "models/.young.big.partial.meta"}) {
		t.Errorf("after the sweep: %v", got)
	}
}

// TestStartLock: Start sweeps temp files only when no other process holds the directory.
func TestStartLock(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "models"), 0o755)
	tmp := filepath.Join(dir, "models", ".m.big.tmp-42")
	os.WriteFile(tmp, []byte("x"), 0o600)
	first := cache.New(cache.Options{Dir: dir})
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); err == nil {
		t.Fatal("a leftover survived the first start")
	}
	os.WriteFile(tmp, []byte("x"), 0o600) // the live one's
	second := cache.New(cache.Options{Dir: dir})
	if err := second.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); err != nil {
		t.Fatal("a second process swept a live one's temp file")
	}
	first.Close()
	second.Close()
}

// files lists the files under dir (relative, sorted), the lock file aside.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			if rel != ".lock" {
				out = append(out, rel)
			}
		}
		return nil
	})
	slices.Sort(out)
	return out
}
