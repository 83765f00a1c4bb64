package cache

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
)

// partialMeta is the sidecar of a partial download: what resuming it needs. Durable counts
// only bytes that were fsynced before the sidecar was written, so after a power cut the
// partial holds at least that many good bytes; anything past them is cut off.
type partialMeta struct {
	Name    string `json:"name"`
	ETag    string `json:"etag"`
	Size    int64  `json:"size"`
	Durable int64  `json:"durable"`
}

// file is a big part being written into the cache, by a download (Partial) or an upload
// (Temp). Its bytes are hashed as they are written, so the pairing record's SHA-256 costs no
// second read of the part.
type file struct {
	c *Cache
	k Key
	f *os.File
	n int64     // bytes in the file: where the next write goes
	h hash.Hash // SHA-256 of the file's first n bytes
}

// write appends to the file. A full disk is a *SpaceError (ErrNoSpace).
func (w *file) write(b []byte) (int, error) {
	n, err := w.f.Write(b)
	w.h.Write(b[:n])
	w.n += int64(n)
	if err != nil {
		return n, w.c.diskError(w.k, "cache file", w.n, err)
	}
	return n, nil
}

// flush makes what was written durable. A full disk (delayed allocation) is a *SpaceError.
func (w *file) flush() error {
	if err := w.f.Sync(); err != nil {
		return w.c.diskError(w.k, "cache file", w.n, err)
	}
	return nil
}

// seal flushes and closes the file and returns its pairing record with the small part whose
// SHA-256 (hex) is smallSum, for Cache.commit.
func (w *file) seal(smallSum string) (Record, error) {
	if err := w.flush(); err != nil {
		return Record{}, err
	}
	if err := w.f.Close(); err != nil {
		return Record{}, w.c.diskError(w.k, "cache file", w.n, err)
	}
	return Record{Name: w.k.Name, Small: smallSum, Size: w.n, SHA256: hex.EncodeToString(w.h.Sum(nil))}, nil
}

// Partial is a big part being downloaded into the cache, resumable across restarts. Only one
// Partial of a part exists at a time in a process (the caller shares one download per part).
type Partial struct {
	file
	meta partialMeta
	done bool
}

// OpenPartial opens the partial download of folder/name, creating it empty when there is
// none. An earlier one is kept up to the bytes its sidecar counts as durable; Offset tells
// where it continues, ETag and Size which object it belongs to. Opening counts as asking for
// it (a partial nobody asked for in PartialMaxAge is removed).
func (c *Cache) OpenPartial(folder, name string) (*Partial, error) {
	k := Key{folder, name}
	c.mu.Lock()
	if c.active[k] {
		c.mu.Unlock()
		return nil, fmt.Errorf("cache: %s is already being downloaded", k)
	}
	c.active[k] = true
	c.mu.Unlock()
	p, err := c.openPartial(k)
	if err != nil {
		c.mu.Lock()
		delete(c.active, k)
		c.mu.Unlock()
		return nil, err
	}
	return p, nil
}

func (c *Cache) openPartial(k Key) (*Partial, error) {
	if err := os.MkdirAll(c.folderDir(k), 0o750); err != nil {
		return nil, c.diskError(k, "cache directory", 0, err)
	}
	f, err := os.OpenFile(c.partialPath(k), os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, c.diskError(k, "cache file", 0, err)
	}
	p := &Partial{file: file{c: c, k: k, f: f, h: sha256.New()}, meta: partialMeta{Name: k.Name}}
	if b, err := os.ReadFile(c.metaPath(k)); err == nil {
		var m partialMeta
		if json.Unmarshal(b, &m) == nil && m.Name == k.Name && m.Durable >= 0 && m.Size >= m.Durable {
			p.meta = m
		}
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	keep := min(p.meta.Durable, fi.Size())
	if keep > 0 {
		// The bytes counted durable are hashed again: the record's SHA-256 covers the whole part.
		if _, err := io.Copy(p.h, io.NewSectionReader(f, 0, keep)); err != nil {
			f.Close()
			return nil, fmt.Errorf("read partial download of %s: %w", k, err)
		}
	}
	if err := f.Truncate(keep); err != nil {
		f.Close()
		return nil, c.diskError(k, "cache file", keep, err)
	}
	if _, err := f.Seek(keep, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	p.n, p.meta.Durable = keep, keep
	if err := p.writeMeta(); err != nil { // also marks it asked for now
		f.Close()
		return nil, err
	}
	return p, nil
}

// Offset is where the download continues: the bytes of the object already in the partial.
func (p *Partial) Offset() int64 { return p.n }

// ETag is the ETag of the object the partial's bytes belong to ("" when it holds none).
func (p *Partial) ETag() string { return p.meta.ETag }

// Size is the size of that object.
func (p *Partial) Size() int64 { return p.meta.Size }

// Begin tells which object the bytes to come belong to. If the partial holds bytes of
// another object (its ETag or size differ), they are dropped and the download starts from
// zero.
func (p *Partial) Begin(size int64, etag string) error {
	if p.n > 0 && (p.meta.ETag != etag || p.meta.Size != size) {
		p.c.log.Info("the CDN object changed since the partial download: starting it from zero",
			"folder", p.k.Folder, "name", p.k.Name, "had", p.n)
		if err := p.truncate(); err != nil {
			return err
		}
	}
	p.meta.ETag, p.meta.Size = etag, size
	return p.writeMeta()
}

// Reset drops every byte of the partial: the object changed (the CDN answered 412).
func (p *Partial) Reset() error {
	p.meta.ETag = ""
	if err := p.truncate(); err != nil {
		return err
	}
	return p.writeMeta()
}

func (p *Partial) truncate() error {
	if err := p.f.Truncate(0); err != nil {
		return p.c.diskError(p.k, "cache file", 0, err)
	}
	if _, err := p.f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	p.n, p.meta.Durable = 0, 0
	p.h.Reset()
	return nil
}

// Write appends to the partial; every SyncEvery bytes it fsyncs them and counts them durable.
// A full disk is a *SpaceError (ErrNoSpace).
func (p *Partial) Write(b []byte) (int, error) {
	n, err := p.write(b)
	if err != nil {
		return n, err
	}
	if p.n-p.meta.Durable >= p.c.syncEvery {
		if err := p.sync(); err != nil {
			return n, err
		}
	}
	return n, nil
}

// sync makes every byte written so far durable, then says so in the sidecar.
func (p *Partial) sync() error {
	if err := p.flush(); err != nil {
		return err
	}
	p.meta.Durable = p.n
	return p.writeMeta()
}

func (p *Partial) writeMeta() error {
	b, _ := json.Marshal(p.meta)
	if err := writeFileAtomic(p.c.metaPath(p.k), b); err != nil {
		return p.c.diskError(p.k, "partial download record", p.n, err)
	}
	return nil
}

// Commit makes the complete partial the cached big part of its resource, paired with the
// small part whose SHA-256 (hex) is smallSum.
func (p *Partial) Commit(smallSum string) error {
	if p.n != p.meta.Size {
		return fmt.Errorf("cache: commit %s: %d of %d bytes", p.k, p.n, p.meta.Size)
	}
	rec, err := p.seal(smallSum)
	if err != nil {
		return err
	}
	err = p.c.commit(p.k, p.f.Name(), rec)
	os.Remove(p.c.metaPath(p.k))
	p.finish()
	return err
}

// Close ends a download that did not complete. keep keeps its bytes for a later download to
// resume from (made durable first); otherwise the partial and its sidecar are removed.
func (p *Partial) Close(keep bool) error {
	if p.done {
		return nil
	}
	var err error
	if keep && p.n > 0 {
		err = p.sync()
	}
	p.f.Close()
	if !keep || p.n == 0 || err != nil {
		os.Remove(p.f.Name())
		os.Remove(p.c.metaPath(p.k))
	}
	p.finish()
	return err
}

func (p *Partial) finish() {
	p.done = true
	p.c.mu.Lock()
	delete(p.c.active, p.k)
	p.c.mu.Unlock()
}

// Temp is an upload's big part being written to the cache. It is not visible in the cache
// until Commit.
type Temp struct{ file }

// NewTemp starts writing the big part of folder/name.
func (c *Cache) NewTemp(folder, name string) (*Temp, error) {
	k := Key{folder, name}
	if err := os.MkdirAll(c.folderDir(k), 0o750); err != nil {
		return nil, c.diskError(k, "cache directory", 0, err)
	}
	f, err := os.CreateTemp(c.folderDir(k), "."+stem(name)+".big.tmp-*")
	if err != nil {
		return nil, c.diskError(k, "cache file", 0, err)
	}
	return &Temp{file{c: c, k: k, f: f, h: sha256.New()}}, nil
}

// Write appends to the temp file. A full disk is a *SpaceError (ErrNoSpace).
func (t *Temp) Write(b []byte) (int, error) { return t.write(b) }

// Sync flushes what was written to disk. A full disk (delayed allocation) is a *SpaceError.
func (t *Temp) Sync() error { return t.flush() }

// ReaderAt reads back what was written, e.g. to upload it with its size known.
func (t *Temp) ReaderAt() io.ReaderAt { return t.f }

// Size is the number of bytes written.
func (t *Temp) Size() int64 { return t.n }

// Commit makes the temp file the cached big part, paired with the small part whose SHA-256
// (hex) is smallSum.
func (t *Temp) Commit(smallSum string) error {
	rec, err := t.seal(smallSum)
	if err != nil {
		t.Abort()
		return err
	}
	if err := t.c.commit(t.k, t.f.Name(), rec); err != nil {
		os.Remove(t.f.Name())
		return err
	}
	return nil
}

// Abort removes the temp file.
func (t *Temp) Abort() {
	t.f.Close()
	os.Remove(t.f.Name())
}

// commit renames the file at from into place as k's big part and writes its record. The old
// record is removed first, so a crash in between leaves a big part without a record (not
// trusted) rather than a wrong record. Then the cache is trimmed to Max.
func (c *Cache) commit(k Key, from string, rec Record) error {
	b, _ := json.Marshal(rec)
	big, pair := c.bigPath(k), c.pairPath(k)
	c.commitMu.Lock()
	os.Remove(pair)
	if err := os.Rename(from, big); err != nil {
		c.commitMu.Unlock()
		return fmt.Errorf("cache file: %w", err)
	}
	err := writeFileAtomic(pair, b)
	if err == nil {
		// The bytes were hashed as they were written: the part counts as verified.
		if fi, serr := os.Stat(big); serr == nil {
			c.mu.Lock()
			c.verified[k] = idOf(fi)
			c.lastUsed[k] = c.now()
			c.mu.Unlock()
		}
	}
	c.commitMu.Unlock()
	if err != nil {
		return c.diskError(k, "cache pairing record", rec.Size, err)
	}
	c.Evict(k)
	return nil
}

// Remove removes the cached big part of folder/name and its record, e.g. one found damaged
// while nobody reads it. Parts being read are left alone.
func (c *Cache) Remove(folder, name string) {
	k := Key{folder, name}
	c.commitMu.Lock()
	defer c.commitMu.Unlock()
	c.mu.Lock()
	busy := c.readers[k] > 0
	c.mu.Unlock()
	if !busy {
		os.Remove(c.pairPath(k))
		os.Remove(c.bigPath(k))
	}
}

// isTemp reports whether a file name is one of the cache's temp files.
func isTemp(name string) bool {
	ok, _ := filepath.Match(".*.tmp-*", name)
	return ok
}
