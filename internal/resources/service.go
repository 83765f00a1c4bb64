package resources

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"golang.org/x/sync/singleflight"

	"github.com/azaion/loader/internal/cdn"
	"github.com/azaion/loader/internal/resourceapi"
	"github.com/azaion/loader/internal/security"
)

// API is what the service needs of the Resource API client.
type API interface {
	// GetResource returns the named file, already decrypted with the caller's API key.
	GetResource(ctx context.Context, folder, name string) ([]byte, error)
	UploadResource(ctx context.Context, folder, name string, r io.ReadSeeker) error
	CDN() (resourceapi.CDNSettings, error)
}

// Store is what the service needs of an S3 CDN client; *cdn.Client satisfies it.
type Store interface {
	Download(ctx context.Context, bucket, object string, w io.Writer) (int64, error)
	Upload(ctx context.Context, bucket, object string, r io.Reader, size int64) error
}

// Default split limits of SPEC §5: the small part is 30% of the ciphertext, at most 3072 bytes.
const (
	DefaultSplitMax   = 3072
	DefaultSplitRatio = 0.3
)

// Options configure a Service.
type Options struct {
	CacheDir   string  // MODEL_CACHE_DIR
	SplitMax   int     // 0 = DefaultSplitMax
	SplitRatio float64 // 0 = DefaultSplitRatio
	// NewStore builds a CDN client for one credential pair; nil = cdn.New with CDNOptions.
	NewStore   func(cdn.Config) (Store, error)
	CDNOptions cdn.Options
	Logger     *slog.Logger
	Observer   Observer // nil = none
}

// Observer is told about cache use and traffic, for metrics.
type Observer interface {
	CacheHit()
	CacheMiss()
	CDNDownloaded(n int64)
	Served(n int64)
}

// Service uploads and downloads resources with the binary split (SPEC §5).
type Service struct {
	api      API
	opts     Options
	log      *slog.Logger
	key      []byte // AES key from the shared resource key
	download singleflight.Group
	// cacheMu makes a commit (big part renamed into place, then its pairing record written)
	// atomic to openCached, which reads both: otherwise a reader could pair the big part of
	// one version with the record of the next.
	cacheMu sync.RWMutex

	mu     sync.Mutex
	stores map[cdn.Config]Store // one client per credential pair, reused across requests
}

// New returns a Service caching big parts under opts.CacheDir.
func New(api API, opts Options) *Service {
	if opts.SplitMax <= 0 {
		opts.SplitMax = DefaultSplitMax
	}
	if opts.SplitRatio <= 0 {
		opts.SplitRatio = DefaultSplitRatio
	}
	if opts.NewStore == nil {
		o := opts.CDNOptions
		opts.NewStore = func(c cdn.Config) (Store, error) { return cdn.New(c, o) }
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Observer == nil {
		opts.Observer = nopObserver{}
	}
	return &Service{
		api:    api,
		opts:   opts,
		log:    opts.Logger,
		key:    security.KeyFromString(security.ResourceKey()),
		stores: make(map[cdn.Config]Store),
	}
}

type nopObserver struct{}

func (nopObserver) CacheHit()             {}
func (nopObserver) CacheMiss()            {}
func (nopObserver) CDNDownloaded(n int64) {}
func (nopObserver) Served(n int64)        {}

func validate(folder, name string) error {
	if err := ValidateName("folder", folder, false); err != nil {
		return err
	}
	if !validBucket(folder) {
		// The folder is the CDN bucket: say so now rather than answer the S3 error as a 500.
		return fmt.Errorf("%w: folder %q is not a CDN bucket name (3-63 lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit)", ErrInvalidName, folder)
	}
	return ValidateName("filename", name, false)
}

// validBucket reports whether folder is a valid S3 bucket name.
func validBucket(folder string) bool {
	if len(folder) < 3 || len(folder) > 63 {
		return false
	}
	for i, c := range []byte(folder) {
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		if !alnum && (c != '.' && c != '-' || i == 0 || i == len(folder)-1) {
			return false
		}
	}
	return true
}

func (s *Service) store(upload bool) (Store, error) {
	set, err := s.api.CDN()
	if err != nil {
		return nil, err
	}
	c := cdn.Config{Endpoint: set.Host, AccessKey: set.DownloaderAccessKey, SecretKey: set.DownloaderAccessSecret}
	if upload {
		c.AccessKey, c.SecretKey = set.UploaderAccessKey, set.UploaderAccessSecret
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.stores[c]; ok {
		return st, nil
	}
	st, err := s.opts.NewStore(c)
	if err != nil {
		return nil, fmt.Errorf("CDN client: %w", err)
	}
	s.stores[c] = st
	return st, nil
}

// maxPlainCacheName is the longest name cached under its own name: with ".big", the pairing
// record's dots and a temp suffix it stays below the 255-byte limit of a file name. Longer
// (valid) names are cached under a hash of the name.
const maxPlainCacheName = 200

// cacheName is the file name stem of a resource's cache files.
func cacheName(name string) string {
	if len(name) <= maxPlainCacheName {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	return "sha256-" + hex.EncodeToString(sum[:])
}

// paths of the cached big part and of its pairing record.
func (s *Service) bigPath(folder, name string) string {
	return filepath.Join(s.opts.CacheDir, folder, cacheName(name)+".big")
}

// pairPath records which small part (its SHA-256) and which size the cached big part belongs
// to. Each upload has a fresh IV, so a re-uploaded resource has a different small part and the
// cache is known to be stale before a byte is served. A big part without a record is not
// trusted: CBC has no integrity check, and an old big part decrypts "fine" behind a new small
// part. Names never start with a dot, so the record cannot collide with a resource.
func (s *Service) pairPath(folder, name string) string {
	return filepath.Join(s.opts.CacheDir, folder, "."+cacheName(name)+".big.pair")
}

// tempPattern is the name of every temp file the cache writes; RemoveTemp sweeps them.
const tempPattern = ".*.tmp-*"

// RemoveTemp deletes temp files that an interrupted earlier run (power loss, SIGKILL during a
// download) left in the cache. Call it once at start, before serving.
func (s *Service) RemoveTemp() error {
	leftovers, err := filepath.Glob(filepath.Join(s.opts.CacheDir, "*", tempPattern))
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range leftovers {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if len(leftovers) > 0 {
		s.log.Info("removed leftover temp files from the model cache", "count", len(leftovers))
	}
	return errors.Join(errs...)
}

// Preload puts the big part of folder/name into the cache, paired with its small part (as the
// Resource API returns it), as if it had been downloaded: for devices seeded offline, e.g. from
// removable media, and for benchmarks.
func (s *Service) Preload(folder, name string, small []byte, big io.Reader) error {
	if err := validate(folder, name); err != nil {
		return err
	}
	return s.writeCache(folder, name, small, func(w io.Writer) (int64, error) { return io.Copy(w, big) })
}

func pairRecord(small []byte, bigSize int64) string {
	sum := sha256.Sum256(small)
	return hex.EncodeToString(sum[:]) + " " + strconv.FormatInt(bigSize, 10) + "\n"
}

// Open downloads and decrypts folder/name. The returned Resource knows its exact size before
// the first byte is read; the caller must Close it.
func (s *Service) Open(ctx context.Context, folder, name string) (*Resource, error) {
	if err := validate(folder, name); err != nil {
		return nil, err
	}
	small, err := s.api.GetResource(ctx, folder, name+".small")
	if err != nil {
		return nil, fmt.Errorf("small part of %s/%s: %w", folder, name, err)
	}
	f, fromCache, err := s.openBig(ctx, folder, name, small, nil)
	if err != nil {
		return nil, err
	}
	size, err := s.plaintextSize(small, f)
	if err != nil && fromCache {
		// A cached big part that does not decrypt is stale or damaged: fetch it once more.
		bad, serr := f.Stat()
		f.Close()
		if serr != nil {
			return nil, fmt.Errorf("cached big part of %s/%s: %w", folder, name, serr)
		}
		s.log.Warn("cached big part does not decrypt, fetching it again", "folder", folder, "name", name, "err", err)
		if f, _, err = s.openBig(ctx, folder, name, small, bad); err != nil {
			return nil, err
		}
		size, err = s.plaintextSize(small, f)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("decrypt %s/%s: %w", folder, name, err)
	}
	body := security.NewDecrypter(io.MultiReader(bytes.NewReader(small), f), s.key)
	return &Resource{Size: size, ReadCloser: &resourceReader{r: body, c: f, obs: s.opts.Observer}}, nil
}

func (s *Service) plaintextSize(small []byte, big *os.File) (int64, error) {
	fi, err := big.Stat()
	if err != nil {
		return 0, err
	}
	ra := concatReaderAt{head: small, tail: big}
	return security.PlaintextSize(ra, int64(len(small))+fi.Size(), s.key)
}

// openBig opens the cached big part, fetching it from the CDN when it is missing or does not
// belong to this small part. bad, when not nil, is a cached big part that failed to decrypt:
// it is fetched again even though it looks paired. fromCache tells whether the part was
// already there.
func (s *Service) openBig(ctx context.Context, folder, name string, small []byte, bad os.FileInfo) (f *os.File, fromCache bool, err error) {
	if bad == nil {
		if f, ok := s.openCached(folder, name, small); ok {
			s.opts.Observer.CacheHit()
			return f, true, nil
		}
	}
	s.opts.Observer.CacheMiss()
	// Everyone asking for this part now shares one download. It runs detached from any one
	// request, so a client that goes away does not fail the others; it is bounded by the CDN
	// client's own resume limits.
	//
	// The flight is keyed by the resource, not by its small part, so that two flights never
	// write the same cache file. A caller that joined a flight for another version of the
	// resource (it was re-uploaded meanwhile) finds the result unpaired and starts one more.
	key := folder + "/" + name
	for range 2 {
		ch := s.download.DoChan(key, func() (any, error) {
			// Another flight may have filled the cache since this caller looked, and a caller
			// that looked before it finished would otherwise download the part once more.
			if f, ok := s.openCached(folder, name, small); ok {
				fi, err := f.Stat()
				f.Close()
				if err == nil && (bad == nil || !os.SameFile(fi, bad)) {
					return nil, nil
				}
			}
			return nil, s.fetchBig(context.WithoutCancel(ctx), folder, name, small)
		})
		select {
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case res := <-ch:
			if res.Err != nil {
				return nil, false, res.Err
			}
		}
		if f, ok := s.openCached(folder, name, small); ok {
			return f, false, nil
		}
	}
	return nil, false, fmt.Errorf("big part of %s/%s: %w: the resource changed while it was being fetched",
		folder, name, cdn.ErrUnavailable)
}

// openCached opens the cached big part if it is there and its pairing record says it belongs
// to small.
func (s *Service) openCached(folder, name string, small []byte) (*os.File, bool) {
	s.cacheMu.RLock()
	defer s.cacheMu.RUnlock()
	f, err := os.Open(s.bigPath(folder, name))
	if err != nil {
		return nil, false
	}
	fi, err := f.Stat()
	rec, rerr := os.ReadFile(s.pairPath(folder, name))
	if err == nil && rerr == nil && fi.Mode().IsRegular() && string(rec) == pairRecord(small, fi.Size()) {
		return f, true
	}
	f.Close()
	return nil, false
}

// fetchBig downloads the big part into the cache: temp file, fsync, rename, pairing record.
func (s *Service) fetchBig(ctx context.Context, folder, name string, small []byte) error {
	st, err := s.store(false)
	if err != nil {
		return err
	}
	return s.writeCache(folder, name, small, func(w io.Writer) (int64, error) {
		n, err := st.Download(ctx, folder, name+".big", w)
		s.opts.Observer.CDNDownloaded(n)
		if err != nil {
			return n, fmt.Errorf("big part of %s/%s: %w", folder, name, err)
		}
		return n, nil
	})
}

// writeCache writes the big part produced by fill into the cache: temp file, fsync, rename.
func (s *Service) writeCache(folder, name string, small []byte, fill func(io.Writer) (int64, error)) error {
	p, err := s.newPending(folder, name)
	if err != nil {
		return err
	}
	n, err := fill(p.f)
	if err != nil {
		p.abort()
		return err
	}
	if err := p.finish(small, n); err != nil {
		return err
	}
	return p.commit()
}

// pending is a big part written to a temp file, not yet visible in the cache.
type pending struct {
	s                 *Service
	f                 *os.File
	folder, name, rec string
}

func (s *Service) newPending(folder, name string) (*pending, error) {
	dir := filepath.Join(s.opts.CacheDir, folder)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("cache directory: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+cacheName(name)+".big.tmp-*")
	if err != nil {
		return nil, fmt.Errorf("cache file: %w", err)
	}
	return &pending{s: s, f: f, folder: folder, name: name}, nil
}

// finish flushes the temp file to disk and prepares the pairing record.
func (p *pending) finish(small []byte, size int64) error {
	if err := p.f.Sync(); err != nil {
		p.abort()
		return fmt.Errorf("cache file: %w", err)
	}
	if err := p.f.Close(); err != nil {
		p.abort()
		return fmt.Errorf("cache file: %w", err)
	}
	p.rec = pairRecord(small, size)
	return nil
}

// commit renames the temp file into place and writes the pairing record. The record is
// removed first, so a crash in between leaves a big part without a record (checked by
// decryption) rather than a wrong record.
func (p *pending) commit() error {
	big, pair := p.s.bigPath(p.folder, p.name), p.s.pairPath(p.folder, p.name)
	p.s.cacheMu.Lock()
	defer p.s.cacheMu.Unlock()
	os.Remove(pair)
	if err := os.Rename(p.f.Name(), big); err != nil {
		p.abort()
		return fmt.Errorf("cache file: %w", err)
	}
	if err := writeFileAtomic(pair, []byte(p.rec)); err != nil {
		return fmt.Errorf("cache pairing record: %w", err)
	}
	return nil
}

func (p *pending) abort() {
	p.f.Close()
	os.Remove(p.f.Name())
}

func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-*") // base starts with a dot
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

// Upload encrypts r with the resource key and stores it split: the big part on the CDN and in
// the cache, then the small part on the Resource API. It streams: memory does not grow with
// the resource's size.
func (s *Service) Upload(ctx context.Context, folder, name string, r io.Reader) error {
	if err := validate(folder, name); err != nil {
		return err
	}
	st, err := s.store(true)
	if err != nil {
		return err
	}
	// The upload's own reader failing (a client that went away) is not the CDN's fault:
	// remember its error to report it as such.
	src := &readErrRecorder{r: r}
	enc, err := security.NewEncryptReader(src, s.key)
	if err != nil {
		return err
	}
	// The split point needs the ciphertext's length only while the ciphertext is short:
	// past threshold bytes it is always SplitMax. Reading that much up front is enough.
	threshold := int(float64(s.opts.SplitMax)/s.opts.SplitRatio) + security.BlockSize
	head := make([]byte, threshold)
	got, err := io.ReadFull(enc, head)
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		head = head[:got]
	case err != nil:
		return fmt.Errorf("read upload: %w", err)
	}
	n := s.splitPoint(len(head), got == threshold)
	small := head[:n]
	big := io.MultiReader(bytes.NewReader(head[n:]), enc)

	p, err := s.newPending(folder, name)
	if err != nil {
		return err
	}
	cw := &countingWriter{w: p.f}
	err = st.Upload(ctx, folder, name+".big", io.TeeReader(big, cw), -1)
	if cw.err != nil { // e.g. a full disk: say so rather than blame the CDN
		p.abort()
		return fmt.Errorf("cache file: %w", cw.err)
	}
	if src.err != nil {
		p.abort()
		return fmt.Errorf("read upload: %w", src.err)
	}
	if err != nil {
		p.abort()
		return fmt.Errorf("upload big part of %s/%s: %w", folder, name, err)
	}
	if err := p.finish(small, cw.n); err != nil {
		return err
	}
	if err := s.api.UploadResource(ctx, folder, name+".small", bytes.NewReader(small)); err != nil {
		os.Remove(p.f.Name())
		// SPEC §5 puts the big part first, so the CDN now holds the new one while the API may
		// keep an older small part: devices without a cache would decrypt a mix of the two
		// (CBC cannot tell) until an upload of this resource succeeds. Say so loudly.
		s.log.Error("upload left the CDN's big part newer than the Resource API's small part; upload the resource again",
			"folder", folder, "name", name, "err", err)
		return fmt.Errorf("upload small part of %s/%s: %w", folder, name, err)
	}
	return p.commit()
}

// splitPoint is SPEC §5's n = min(SplitMax, floor(SplitRatio * len(c))); long means the
// ciphertext is at least as long as the head that was read.
func (s *Service) splitPoint(headLen int, long bool) int {
	if long {
		return s.opts.SplitMax
	}
	return min(s.opts.SplitMax, int(s.opts.SplitRatio*float64(headLen)))
}

// countingWriter counts bytes and remembers the first write error, so Upload can tell a cache
// failure from a CDN failure.
type countingWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.err = err
	return n, err
}

// readErrRecorder remembers the first error other than io.EOF of r.
type readErrRecorder struct {
	r   io.Reader
	err error
}

func (e *readErrRecorder) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF && e.err == nil {
		e.err = err
	}
	return n, err
}

// concatReaderAt reads head followed by tail as one io.ReaderAt.
type concatReaderAt struct {
	head []byte
	tail io.ReaderAt
}

func (c concatReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	if off < int64(len(c.head)) {
		n = copy(p, c.head[off:])
		if n == len(p) {
			return n, nil
		}
		off = int64(len(c.head))
	}
	m, err := c.tail.ReadAt(p[n:], off-int64(len(c.head)))
	return n + m, err
}

// resourceReader streams plaintext and closes the cached file when done.
type resourceReader struct {
	r      io.Reader
	c      io.Closer
	obs    Observer
	closed bool
}

func (r *resourceReader) Read(p []byte) (int, error) {
	if r.closed {
		// The decrypter may still hold plaintext it read ahead: a closed resource hands out
		// none of it.
		return 0, os.ErrClosed
	}
	n, err := r.r.Read(p)
	r.obs.Served(int64(n))
	return n, err
}

func (r *resourceReader) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	return r.c.Close()
}
