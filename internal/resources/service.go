package resources

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/azaion/loader/internal/cache"
	"github.com/azaion/loader/internal/cdn"
	"github.com/azaion/loader/internal/resourceapi"
	"github.com/azaion/loader/internal/security"
)

// API is what the service needs of the Resource API client.
type API interface {
	// GetResource returns the named file, already decrypted with the caller's API key.
	GetResource(ctx context.Context, folder, name string) ([]byte, error)
	UploadResource(ctx context.Context, folder, name string, r io.ReadSeeker) error
	// ListResources returns the names of the files in folder (for PREFETCH folder/*).
	ListResources(ctx context.Context, folder string) ([]string, error)
	CDN() (resourceapi.CDNSettings, error)
}

// Store is what the service needs of an S3 CDN client; *cdn.Client satisfies it.
type Store interface {
	Stat(ctx context.Context, bucket, object string) (cdn.Object, error)
	DownloadFrom(ctx context.Context, bucket, object string, w io.Writer, from cdn.Resume) (int64, error)
	Upload(ctx context.Context, bucket, object string, r io.ReaderAt, size int64, meta map[string]string) error
}

// Default split limits of SPEC §5: the small part is 30% of the ciphertext, at most 3072 bytes.
const (
	DefaultSplitMax   = 3072
	DefaultSplitRatio = 0.3
)

// Defaults of Options.
const (
	DefaultPrefetchInterval = time.Hour
	// DefaultMaxUploads bounds the uploads sending to the CDN at once; more wait their turn.
	DefaultMaxUploads = 4
)

// Options configure a Service.
type Options struct {
	CacheDir string // MODEL_CACHE_DIR
	// CacheMax is MODEL_CACHE_MAX in bytes, 0 for no cap (see cache.Options.Max).
	CacheMax int64
	// Prefetch is PREFETCH: "folder/name" and "folder/*" entries brought into the cache in the
	// background after each login and every PrefetchInterval (0 = DefaultPrefetchInterval).
	Prefetch         []string
	PrefetchInterval time.Duration
	// RateLimit is CDN_RATE_LIMIT: bytes per second over all CDN downloads together, 0 for none.
	RateLimit int64
	// MaxUploads bounds concurrent uploads to the CDN; 0 means DefaultMaxUploads.
	MaxUploads int
	SplitMax   int     // 0 = DefaultSplitMax
	SplitRatio float64 // 0 = DefaultSplitRatio
	// NewStore builds a CDN client for one credential pair; nil = cdn.New with CDNOptions.
	NewStore   func(cdn.Config) (Store, error)
	CDNOptions cdn.Options
	// SyncEvery: bytes of a download between two fsyncs; 0 = cache.DefaultSyncEvery.
	SyncEvery int64
	Logger    *slog.Logger
	Observer  Observer // nil = none
}

// Observer is told about cache use and traffic, for metrics.
type Observer interface {
	CacheHit()
	CacheMiss()
	CDNDownloaded(n int64)
	Served(n int64)
}

// Service uploads and downloads resources with the binary split (SPEC §5) and keeps the big
// parts in the model cache (SPEC §11): it decides what to fetch and when, the cache package
// keeps the bytes.
type Service struct {
	api     API
	opts    Options
	log     *slog.Logger
	obs     Observer
	key     []byte // AES key from the shared resource key
	cache   *cache.Cache
	targets []target      // PREFETCH
	limiter *rate.Limiter // CDN_RATE_LIMIT; nil = none
	uploads chan struct{} // one token per upload sending to the CDN
	pf      *prefetcher

	// ctx is the owner of everything that runs beyond one request: shared downloads,
	// prefetch, the sweep of old partials. Close cancels it and waits for them.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	fmu     sync.Mutex
	flights map[cache.Key]*flight
	loads   int           // flights a /load waits on: prefetch yields to them
	idle    chan struct{} // closed (and replaced) when loads drops to zero
	closed  bool

	mu     sync.Mutex
	stores map[cdn.Config]Store // one client per credential pair, reused across requests
}

// New returns a Service caching big parts under opts.CacheDir. It starts nothing: a serving
// process calls Start, and Close in the end.
func New(api API, opts Options) (*Service, error) {
	if opts.SplitMax <= 0 {
		opts.SplitMax = DefaultSplitMax
	}
	if opts.SplitRatio <= 0 {
		opts.SplitRatio = DefaultSplitRatio
	}
	if opts.PrefetchInterval <= 0 {
		opts.PrefetchInterval = DefaultPrefetchInterval
	}
	if opts.MaxUploads <= 0 {
		opts.MaxUploads = DefaultMaxUploads
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
	targets, err := parseTargets(opts.Prefetch)
	if err != nil {
		return nil, err
	}
	s := &Service{
		api:     api,
		opts:    opts,
		log:     opts.Logger,
		obs:     opts.Observer,
		key:     security.KeyFromString(security.ResourceKey()),
		targets: targets,
		uploads: make(chan struct{}, opts.MaxUploads),
		flights: make(map[cache.Key]*flight),
		idle:    make(chan struct{}),
		stores:  make(map[cdn.Config]Store),
	}
	if opts.RateLimit > 0 {
		s.limiter = rate.NewLimiter(rate.Limit(opts.RateLimit), rateBurst(opts.RateLimit))
	}
	s.cache = cache.New(cache.Options{
		Dir: opts.CacheDir, Max: opts.CacheMax, Pinned: s.pinned, SyncEvery: opts.SyncEvery, Logger: opts.Logger,
	})
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.pf = newPrefetcher(s)
	return s, nil
}

// rateBurst is how many bytes the limiter lets through at once: an eighth of a second's
// worth, between 4 KiB and 256 KiB, so a cap is kept closely from the first second on.
func rateBurst(bps int64) int {
	return int(min(max(bps/8, 4<<10), 256<<10))
}

// Start takes the cache directory for this process (see cache.Cache.Start: leftovers of an
// interrupted run are swept unless another live process shares the directory) and starts the
// background work: prefetch and the hourly sweep of partial downloads nobody asked for in
// 7 days. Only a serving process calls it.
func (s *Service) Start() error {
	if err := s.cache.Start(); err != nil {
		return err
	}
	s.fmu.Lock()
	defer s.fmu.Unlock()
	if s.closed {
		return errClosed
	}
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		s.pf.run(s.ctx)
	}()
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(time.Hour)
		defer t.Stop()
		for {
			select {
			case <-s.ctx.Done():
				return
			case <-t.C:
				s.cache.SweepPartials()
			}
		}
	}()
	return nil
}

// Close stops prefetch and every download still running (their partials are kept, fsynced,
// for the next run to resume), waits for them, and releases the cache directory. Requests
// still streaming a resource are not affected: their files stay open.
func (s *Service) Close() error {
	s.fmu.Lock()
	s.closed = true
	s.fmu.Unlock()
	s.cancel()
	s.wg.Wait()
	return s.cache.Close()
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

// Preload puts the big part of folder/name into the cache, paired with its small part (as the
// Resource API returns it), as if it had been downloaded: for devices seeded offline, e.g. from
// removable media, and for benchmarks.
func (s *Service) Preload(folder, name string, small []byte, big io.Reader) error {
	if err := validate(folder, name); err != nil {
		return err
	}
	t, err := s.cache.NewTemp(folder, name)
	if err != nil {
		return err
	}
	if _, err := io.Copy(t, big); err != nil {
		t.Abort()
		return err
	}
	return t.Commit(cache.SumHex(small))
}
