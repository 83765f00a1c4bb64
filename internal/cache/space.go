package cache

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// ErrNoSpace: the cache's disk has too little free space for a part (HTTP 507).
var ErrNoSpace = errors.New("not enough disk space")

// SpaceError says how much space a part needed and how much there was. Its message is meant
// for the person who has to free the space.
type SpaceError struct {
	Dir     string
	Part    string // FOLDER/NAME
	Need    int64  // bytes; 0 when the disk filled up while writing
	Have    int64  // bytes free
	Written int64  // bytes written when the disk filled up
	Err     error  // the write's error (ENOSPC), if any
}

func (e *SpaceError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("not enough disk space in the model cache %s for %s: the disk filled up after %d bytes (%v)",
			e.Dir, e.Part, e.Written, e.Err)
	}
	return fmt.Sprintf("not enough disk space in the model cache %s for %s: need %d bytes, have %d",
		e.Dir, e.Part, e.Need, e.Have)
}

func (e *SpaceError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrNoSpace}
	}
	return []error{ErrNoSpace, e.Err}
}

// diskError wraps err from writing k's files: a full disk becomes a *SpaceError.
func (c *Cache) diskError(k Key, what string, written int64, err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		free, _ := c.Free()
		return &SpaceError{Dir: c.dir, Part: k.String() + ".big", Written: written, Have: free, Err: syscall.ENOSPC}
	}
	return fmt.Errorf("%s of %s: %w", what, k, err)
}

// Free is the space available to the loader on the cache's file system, in bytes.
func (c *Cache) Free() (int64, error) {
	// The directory may not exist yet: ask about the nearest one that does.
	dir := c.dir
	for {
		var st syscall.Statfs_t
		err := syscall.Statfs(dir, &st)
		if err == nil {
			return int64(st.Bavail) * st.Bsize, nil
		}
		parent := filepath.Dir(dir)
		if !errors.Is(err, syscall.ENOENT) || parent == dir {
			return 0, fmt.Errorf("free space of %s: %w", c.dir, err)
		}
		dir = parent
	}
}

// CheckSpace returns a *SpaceError when the cache's disk has fewer than need bytes free for
// folder/name's big part.
func (c *Cache) CheckSpace(folder, name string, need int64) error {
	free, err := c.Free()
	if err != nil {
		return err
	}
	if free < need {
		return &SpaceError{Dir: c.dir, Part: Key{folder, name}.String() + ".big", Need: need, Have: free}
	}
	return nil
}

// State is what GET /cache says of a part.
type State string

// States of a part on disk; package resources adds StateQueued for prefetch.
const (
	StateCached      State = "cached"      // a complete big part
	StateDownloading State = "downloading" // a partial this process is writing now
	StatePartial     State = "partial"     // an interrupted download, resumed by the next one
	StateQueued      State = "queued"      // waiting for prefetch; nothing on disk yet
)

// Entry is one part on disk.
type Entry struct {
	Key
	Bytes    int64 // on disk
	Size     int64 // of the whole part; -1 when unknown
	State    State
	LastUsed time.Time
	Paired   bool // a complete part with a usable pairing record
}

// List returns every part on disk: complete big parts and partial downloads.
func (c *Cache) List() ([]Entry, error) {
	folders, err := os.ReadDir(c.dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list the model cache: %w", err)
	}
	c.mu.Lock()
	active := make(map[Key]bool, len(c.active))
	for k := range c.active {
		active[k] = true
	}
	lastUsed := make(map[Key]time.Time, len(c.lastUsed))
	for k, t := range c.lastUsed {
		lastUsed[k] = t
	}
	c.mu.Unlock()
	var out []Entry
	for _, d := range folders {
		if !d.IsDir() || strings.HasPrefix(d.Name(), ".") {
			continue
		}
		folder := d.Name()
		files, err := os.ReadDir(filepath.Join(c.dir, folder))
		if err != nil {
			continue
		}
		for _, f := range files {
			if e, ok := c.entry(folder, f, active); ok {
				if t := lastUsed[e.Key]; t.After(e.LastUsed) {
					e.LastUsed = t
				}
				out = append(out, e)
			}
		}
	}
	slices.SortFunc(out, func(a, b Entry) int {
		return strings.Compare(a.Folder+"/"+a.Name+string(a.State), b.Folder+"/"+b.Name+string(b.State))
	})
	return out, nil
}

// entry describes the file f of folder if it is a big part or a partial download.
func (c *Cache) entry(folder string, f os.DirEntry, active map[Key]bool) (Entry, bool) {
	name := f.Name()
	fi, err := f.Info()
	if err != nil || !fi.Mode().IsRegular() {
		return Entry{}, false
	}
	switch {
	case !strings.HasPrefix(name, ".") && strings.HasSuffix(name, ".big"):
		st := strings.TrimSuffix(name, ".big")
		e := Entry{Key: Key{folder, st}, Bytes: fi.Size(), Size: fi.Size(), State: StateCached, LastUsed: fi.ModTime()}
		// The record's modification time is the part's last use (Open sets it).
		pair := filepath.Join(c.dir, folder, "."+st+".big.pair")
		if rec := readRecord(pair); rec != nil && stem(rec.Name) == st {
			if rfi, err := os.Stat(pair); err == nil {
				e.Name, e.Paired, e.LastUsed = rec.Name, rec.Size == fi.Size(), rfi.ModTime()
			}
		}
		return e, true
	case strings.HasPrefix(name, ".") && strings.HasSuffix(name, ".big.partial"):
		st := strings.TrimSuffix(strings.TrimPrefix(name, "."), ".big.partial")
		e := Entry{Key: Key{folder, st}, Bytes: fi.Size(), Size: -1, State: StatePartial, LastUsed: fi.ModTime()}
		if b, err := os.ReadFile(filepath.Join(c.dir, folder, name+".meta")); err == nil {
			var m partialMeta
			if json.Unmarshal(b, &m) == nil && stem(m.Name) == st {
				e.Name = m.Name
				if m.ETag != "" {
					e.Size = m.Size
				}
			}
		}
		if active[e.Key] {
			e.State = StateDownloading
		}
		return e, true
	}
	return Entry{}, false
}

// Evict removes least recently used big parts until the cache fits Max: never keep (the part
// just added), a part being read, a part Pinned names, or a download in progress. A cache that
// cannot be made to fit stays over the cap until those parts are released.
func (c *Cache) Evict(keep Key) {
	if c.max <= 0 {
		return
	}
	entries, err := c.List()
	if err != nil {
		c.log.Warn("model cache: cannot list it to evict parts", "err", err)
		return
	}
	var total int64
	var candidates []Entry
	for _, e := range entries {
		total += e.Bytes
		if e.State == StateCached && e.Key != keep && !c.pinned(e.Folder, e.Name) {
			candidates = append(candidates, e)
		}
	}
	slices.SortFunc(candidates, func(a, b Entry) int { return a.LastUsed.Compare(b.LastUsed) })
	for _, e := range candidates {
		if total <= c.max {
			return
		}
		if c.evict(e.Key) {
			total -= e.Bytes
			c.log.Info("model cache over MODEL_CACHE_MAX: removed the least recently used part",
				"folder", e.Folder, "name", e.Name, "bytes", e.Bytes, "lastUsed", e.LastUsed, "max", c.max)
		}
	}
	if total > c.max {
		c.log.Info("model cache stays over MODEL_CACHE_MAX: the other parts are in use, downloading or named by PREFETCH",
			"bytes", total, "max", c.max)
	}
}

// evict removes k's big part and record unless someone reads it.
func (c *Cache) evict(k Key) bool {
	c.commitMu.Lock()
	defer c.commitMu.Unlock()
	c.mu.Lock()
	busy := c.readers[k] > 0
	if !busy {
		delete(c.verified, k)
		delete(c.lastUsed, k)
	}
	c.mu.Unlock()
	if busy {
		return false
	}
	os.Remove(c.pairPath(k))
	return os.Remove(c.bigPath(k)) == nil
}
