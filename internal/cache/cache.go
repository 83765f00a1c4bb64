// Package cache is the on-disk cache of big parts of model resources (SPEC §5, §11): its layout,
// the pairing records, resumable partial downloads, integrity checks, free space and eviction.
// It knows nothing of HTTP, the CDN or the Resource API: package resources decides what to
// fetch and when, and keeps the bytes here.
//
// Layout, in Options.Dir:
//
//	.lock                         held (flock) by every serving process, see Start
//	FOLDER/STEM.big               a complete big part, ciphertext
//	FOLDER/.STEM.big.pair         its pairing record (JSON Record): the SHA-256 of the small part
//	                              it belongs to, its size and its own SHA-256
//	FOLDER/.STEM.big.partial      a download in progress or interrupted (never served)
//	FOLDER/.STEM.big.partial.meta what resuming it needs (JSON): the object's ETag and size and
//	                              how many bytes of the partial are durably written
//	FOLDER/.STEM.big*.tmp-*       temp files (uploads, records being replaced)
//
// STEM is the resource's name, or "sha256-" and the hex SHA-256 of the name when the name is
// too long to leave room for the suffixes within a file name's 255 bytes. Names never start
// with a dot, so no resource collides with the cache's own files.
package cache

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/singleflight"
)

// ErrCorrupt reports a cached big part whose bytes differ from what its pairing record says
// (bit rot, or a file replaced behind the cache's back): it must be fetched again.
var ErrCorrupt = errors.New("cached big part does not match its pairing record")

// Options configure a Cache.
type Options struct {
	Dir string // MODEL_CACHE_DIR
	// Max is MODEL_CACHE_MAX in bytes: after each new part, the least recently used parts that
	// nobody reads and Pinned does not name are removed until the cache fits. 0 means no cap.
	Max int64
	// Pinned names parts that eviction never removes (PREFETCH); nil pins nothing.
	Pinned func(folder, name string) bool
	// SyncEvery is how many bytes a partial download writes between two fsyncs (and updates
	// of the count of durable bytes); 0 means DefaultSyncEvery.
	SyncEvery int64
	Logger    *slog.Logger
	Now       func() time.Time // nil means time.Now
}

// DefaultSyncEvery: a power cut loses at most this much of a download.
const DefaultSyncEvery = 2 << 20

// PartialMaxAge: a partial download nobody asked for in this long is removed (SPEC §11).
const PartialMaxAge = 7 * 24 * time.Hour

// Cache is the model cache in one directory. It is safe for concurrent use.
type Cache struct {
	dir       string
	max       int64
	pinned    func(folder, name string) bool
	syncEvery int64
	log       *slog.Logger
	now       func() time.Time

	// commitMu makes a commit (big part renamed into place, then its record written) and an
	// eviction atomic to Open, which reads both: otherwise a reader could pair the big part
	// of one version with the record of the next.
	commitMu sync.RWMutex

	mu       sync.Mutex
	readers  map[Key]int    // open Parts, which eviction leaves alone
	active   map[Key]bool   // partials being written by this process
	verified map[Key]fileID // parts whose SHA-256 matched their record, as they were then
	lastUsed map[Key]time.Time
	lock     *os.File // the directory's lock file, held between Start and Close

	verify singleflight.Group
}

// Key names a part: the folder (the CDN bucket) and the resource's name.
type Key struct{ Folder, Name string }

func (k Key) String() string { return k.Folder + "/" + k.Name }

// New returns the cache in opts.Dir. It touches nothing on disk until a part is written.
func New(opts Options) *Cache {
	c := &Cache{
		dir:       opts.Dir,
		max:       opts.Max,
		pinned:    opts.Pinned,
		syncEvery: opts.SyncEvery,
		log:       opts.Logger,
		now:       opts.Now,
		readers:   make(map[Key]int),
		active:    make(map[Key]bool),
		verified:  make(map[Key]fileID),
		lastUsed:  make(map[Key]time.Time),
	}
	if c.pinned == nil {
		c.pinned = func(string, string) bool { return false }
	}
	if c.syncEvery <= 0 {
		c.syncEvery = DefaultSyncEvery
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c
}

// Dir is the cache's directory.
func (c *Cache) Dir() string { return c.dir }

// Max is the cap on the cache's size, 0 for none.
func (c *Cache) Max() int64 { return c.max }

// maxPlainName is the longest name kept as its own STEM: with the longest suffix
// (".STEM.big.partial.meta.tmp-" and ten digits) it stays below 255 bytes.
const maxPlainName = 200

// stem is the file name stem of a resource's cache files.
func stem(name string) string {
	if len(name) <= maxPlainName {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	return "sha256-" + hex.EncodeToString(sum[:])
}

func (c *Cache) folderDir(k Key) string { return filepath.Join(c.dir, k.Folder) }
func (c *Cache) bigPath(k Key) string   { return filepath.Join(c.dir, k.Folder, stem(k.Name)+".big") }
func (c *Cache) pairPath(k Key) string {
	return filepath.Join(c.dir, k.Folder, "."+stem(k.Name)+".big.pair")
}
func (c *Cache) partialPath(k Key) string {
	return filepath.Join(c.dir, k.Folder, "."+stem(k.Name)+".big.partial")
}
func (c *Cache) metaPath(k Key) string { return c.partialPath(k) + ".meta" }

// Record is a cached big part's pairing record. Each upload has a fresh IV, so a re-uploaded
// resource has another small part and a stale cache is known before a byte is served; CBC has
// no integrity check of its own, so SHA256 is what tells a damaged part.
type Record struct {
	Name   string `json:"name"`
	Small  string `json:"smallSha256"` // hex SHA-256 of the small part the big part belongs to
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"` // hex SHA-256 of the big part
}

// SumHex is the lowercase hex SHA-256 of b, as records and the CDN's metadata keep it.
func SumHex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// readRecord reads a pairing record; nil when there is none or it is unreadable (including the
// older "SMALLSHA SIZE" form, which has no SHA-256 of the part and so cannot be trusted).
func readRecord(path string) *Record {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var r Record
	if json.Unmarshal(b, &r) != nil || r.Small == "" || r.SHA256 == "" {
		return nil
	}
	return &r
}

// fileID identifies a file's content as far as the file system tells: a part verified once
// is verified again whenever any of this changed.
type fileID struct {
	dev, ino uint64
	size     int64
	mtime    int64
	ctime    int64
}

func idOf(fi os.FileInfo) fileID {
	id := fileID{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.dev, id.ino = uint64(st.Dev), st.Ino
		id.ctime = st.Ctim.Nano()
	}
	return id
}

// Part is an open cached big part. Eviction leaves it alone until it is closed.
type Part struct {
	*os.File
	Key
	Size   int64
	Record *Record // nil: no usable pairing record (put there by hand or at provisioning)

	c      *Cache
	id     fileID
	closed bool
}

// PairedWith reports whether the part's record says it belongs to the small part with this
// SHA-256 (hex) and has the size it has.
func (p *Part) PairedWith(smallSum string) bool {
	return p.Record != nil && p.Record.Small == smallSum && p.Record.Size == p.Size
}

// SameFile reports whether p and q are the same file on disk.
func (p *Part) SameFile(q *Part) bool {
	return q != nil && p.id.dev == q.id.dev && p.id.ino == q.id.ino
}

// Close closes the file and lets eviction have the part again.
func (p *Part) Close() error {
	if p.closed {
		return nil
	}
	p.closed = true
	p.c.mu.Lock()
	if p.c.readers[p.Key]--; p.c.readers[p.Key] <= 0 {
		delete(p.c.readers, p.Key)
	}
	p.c.mu.Unlock()
	return p.File.Close()
}

// Open opens the cached big part of folder/name with its pairing record, if there is one;
// fs.ErrNotExist when there is no big part. It counts as a use for eviction.
func (c *Cache) Open(folder, name string) (*Part, error) {
	k := Key{folder, name}
	c.commitMu.RLock()
	defer c.commitMu.RUnlock()
	f, err := os.Open(c.bigPath(k))
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("cached big part of %s: not a regular file", k)
	}
	rec := readRecord(c.pairPath(k))
	now := c.now()
	if rec != nil {
		// The record's modification time is when the part was last used, across restarts.
		os.Chtimes(c.pairPath(k), now, now)
	}
	c.mu.Lock()
	c.readers[k]++
	c.lastUsed[k] = now
	c.mu.Unlock()
	return &Part{File: f, Key: k, Size: fi.Size(), Record: rec, c: c, id: idOf(fi)}, nil
}

// Verify checks p against the SHA-256 of its record: ErrCorrupt when they differ. A part that
// passed once is not read again while its device, inode, size, modification and change times
// stay the same.
func (c *Cache) Verify(p *Part) error {
	if p.Record == nil {
		return fmt.Errorf("%w: %s has no pairing record", ErrCorrupt, p.Key)
	}
	c.mu.Lock()
	ok := c.verified[p.Key] == p.id
	c.mu.Unlock()
	if ok {
		return nil
	}
	// Concurrent first loads of one part read it once.
	flight := fmt.Sprintf("%s\x00%v", p.Key, p.id)
	_, err, _ := c.verify.Do(flight, func() (any, error) {
		h := sha256.New()
		if _, err := io.Copy(h, io.NewSectionReader(p.File, 0, p.Size)); err != nil {
			return nil, fmt.Errorf("verify cached big part of %s: %w", p.Key, err)
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != p.Record.SHA256 {
			return nil, fmt.Errorf("%w: %s has SHA-256 %.16s…, its record says %.16s…", ErrCorrupt, p.Key, got, p.Record.SHA256)
		}
		c.mu.Lock()
		c.verified[p.Key] = p.id
		c.mu.Unlock()
		return nil, nil
	})
	return err
}

// writeFileAtomic writes data to path through a temp file in the same directory: a reader
// sees the old file or the whole new one. path's base starts with a dot.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}
