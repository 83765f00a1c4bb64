// Package unlock runs the unlock workflow of SPEC §6: log in upstream, fetch the archive key
// fragment, decrypt the pre-deployed image archive and stream its plaintext straight into the
// Docker daemon, then check that every image is there.
//
// The states a workflow goes through, as GET /unlock/status shows them:
//
//	authenticating   logging in to the Resource API
//	downloading_key  fetching the key fragment
//	decrypting       the archive is being read, decrypted and streamed to Docker
//	                 (BytesDone counts the archive bytes read so far, up to BytesTotal)
//	loading_images   the whole archive has been read and decrypted (BytesDone = BytesTotal);
//	                 Docker finishes loading it, then the images are checked
//	ready            every image is present
//	error            the workflow failed; Status.Error says why
//
// No decrypted byte is written to disk: the plaintext exists only in the stream to Docker.
package unlock

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/azaion/loader/internal/docker"
	"github.com/azaion/loader/internal/security"
)

// Upstream is what the workflow needs of the Resource API.
type Upstream interface {
	Login(ctx context.Context, email, password string) error
	KeyFragment(ctx context.Context) ([]byte, error)
}

// Images is what the workflow needs of the Docker daemon. LoadImages must not read r after it
// returns.
type Images interface {
	LoadImages(ctx context.Context, r io.Reader) error
	ImageExists(ctx context.Context, ref string) (bool, error)
}

// Config says which archive to unlock and which images it must yield.
type Config struct {
	ArchivePath string   // the encrypted archive, IV ‖ AES-256-CBC(PKCS#7(tar))
	Images      []string // repositories without tag (DOCKER_IMAGES; config.DefaultImages by default)
	Tag         string   // the tag every image must carry (API_VERSION); empty means "latest"
	Logger      *slog.Logger
	// Observer is told how each run ended, for metrics; nil means none.
	Observer Observer
}

// Observer is told about finished workflow runs.
type Observer interface {
	// UnlockFinished reports a run that ended "ready" or "error" after d, having decrypted
	// archiveBytes of the archive.
	UnlockFinished(outcome string, d time.Duration, archiveBytes int64)
}

var (
	// ErrInterrupted: the workflow was cancelled (Close, or the caller's context) before it ended.
	ErrInterrupted = errors.New("interrupted")
	// ErrRunning: Run was called while a workflow is already running.
	ErrRunning = errors.New("an unlock is already running")
	// ErrClosed: the Unlocker has been closed.
	ErrClosed = errors.New("unlocker closed")
)

// Unlocker runs at most one unlock workflow at a time and keeps its state for Status. It is safe
// for concurrent use.
type Unlocker struct {
	cfg  Config
	refs []string // image:tag, every one must exist
	up   Upstream
	img  Images
	log  *slog.Logger

	// newDecrypter is security.NewDecrypter; tests replace it to cut the stream.
	newDecrypter func(r io.Reader, key []byte) io.Reader

	// base is the parent of every background run; Close cancels it.
	base     context.Context
	stopBase context.CancelFunc

	// startSem serialises Start and Run up to the moment a run is under way, so that concurrent
	// callers see it and do not start a second one.
	startSem chan struct{}

	bytesDone  atomic.Int64
	bytesTotal atomic.Int64

	mu     sync.Mutex
	state  State
	reason string        // set with StateError
	done   chan struct{} // closed when the current run ends; nil when none runs
	began  time.Time     // when the current run began
	closed bool
}

// New returns an Unlocker in StateIdle. It starts nothing.
func New(cfg Config, up Upstream, img Images) *Unlocker {
	if cfg.Tag == "" {
		cfg.Tag = "latest"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	refs := make([]string, len(cfg.Images))
	for i, repo := range cfg.Images {
		refs[i] = repo + ":" + cfg.Tag
	}
	base, stop := context.WithCancel(context.Background())
	return &Unlocker{
		cfg:          cfg,
		refs:         refs,
		up:           up,
		img:          img,
		log:          cfg.Logger,
		newDecrypter: security.NewDecrypter,
		base:         base,
		stopBase:     stop,
		startSem:     make(chan struct{}, 1),
		state:        StateIdle,
	}
}

// Status is a snapshot of the current state and progress.
func (u *Unlocker) Status() Status {
	u.mu.Lock()
	defer u.mu.Unlock()
	return Status{
		State:      u.state,
		Error:      u.reason,
		BytesDone:  u.bytesDone.Load(),
		BytesTotal: u.bytesTotal.Load(),
	}
}

// Start is POST /unlock. When every image is already loaded it answers StateReady at once,
// without calling upstream. When a workflow is running it answers that workflow's state and
// starts no other. When the archive is missing and the images are not loaded it returns
// ErrArchiveNotFound. Otherwise it starts the workflow in the background, owned by the Unlocker
// and not by ctx, which bounds only the checks Start itself makes, and answers
// StateAuthenticating. The credentials go to that run only and are not kept after it.
//
// When the check of the loaded images itself fails (Docker unreachable), Start records the
// failure as StateError, as a run would, and answers StateError.
func (u *Unlocker) Start(ctx context.Context, email, password string) (State, error) {
	if err := u.acquire(ctx); err != nil {
		return "", err
	}
	defer u.release()

	if st, running, err := u.current(); err != nil || running {
		return st, err
	}
	if ready, err := u.precheck(ctx); err != nil {
		if errors.Is(err, ErrArchiveNotFound) {
			return "", err
		}
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		u.fail(err)
		return StateError, nil
	} else if ready {
		return StateReady, nil
	}

	runCtx, cancel := context.WithCancel(u.base)
	done, err := u.begin()
	if err != nil {
		cancel()
		return "", err
	}
	go func() {
		defer u.end(done)
		defer cancel()
		u.finish(runCtx, u.work(runCtx, email, password))
	}()
	return StateAuthenticating, nil
}

// Run is the same workflow as Start, run synchronously (azaion-loader unlock). It returns nil
// when the images are loaded (or already were), ErrArchiveNotFound (wrapped) when the archive is
// missing and they are not, ErrRunning when a workflow is already running, and otherwise the
// error that put the Unlocker in StateError. Cancelling ctx, or Close, interrupts it.
func (u *Unlocker) Run(ctx context.Context, email, password string) error {
	if err := u.acquire(ctx); err != nil {
		return err
	}
	if _, running, err := u.current(); err != nil || running {
		u.release()
		if err != nil {
			return err
		}
		return ErrRunning
	}
	ready, err := u.precheck(ctx)
	switch {
	case errors.Is(err, ErrArchiveNotFound):
		u.release()
		return err
	case err != nil:
		u.release()
		return u.finish(ctx, err)
	case ready:
		u.release()
		return nil
	}
	done, err := u.begin()
	u.release()
	if err != nil {
		return err
	}
	defer u.end(done)

	// Interrupted by the caller's ctx as well as by Close.
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(u.base, cancel)
	defer stop()
	return u.finish(runCtx, u.work(runCtx, email, password))
}

// Wait waits until no workflow is running.
func (u *Unlocker) Wait() {
	u.mu.Lock()
	done := u.done
	u.mu.Unlock()
	if done != nil {
		<-done
	}
}

// Close interrupts a running workflow, which ends in StateError "interrupted", and waits for it
// to stop. Start and Run fail with ErrClosed afterwards.
func (u *Unlocker) Close() {
	u.mu.Lock()
	u.closed = true
	u.mu.Unlock()
	u.stopBase()
	u.Wait()
}

func (u *Unlocker) acquire(ctx context.Context) error {
	select {
	case u.startSem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (u *Unlocker) release() { <-u.startSem }

// current returns the state and whether a workflow is running; ErrClosed after Close.
func (u *Unlocker) current() (State, bool, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return "", false, ErrClosed
	}
	return u.state, u.done != nil, nil
}

// precheck answers whether every image is loaded (and then records StateReady), or else whether
// the archive exists (ErrArchiveNotFound when it does not).
func (u *Unlocker) precheck(ctx context.Context) (ready bool, err error) {
	missing, err := u.missingImages(ctx)
	if err != nil {
		return false, err
	}
	if len(missing) == 0 {
		u.mu.Lock()
		u.state, u.reason = StateReady, ""
		u.mu.Unlock()
		u.log.Info("unlock: images already loaded", "state", StateReady)
		return true, nil
	}
	if _, err := os.Stat(u.cfg.ArchivePath); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("%w: %s", ErrArchiveNotFound, u.cfg.ArchivePath)
		}
		return false, fmt.Errorf("encrypted archive %s: %w", u.cfg.ArchivePath, err)
	}
	return false, nil
}

// begin marks a workflow as running, in StateAuthenticating with no progress yet. The caller
// passes done to end when the workflow has ended.
func (u *Unlocker) begin() (done chan struct{}, err error) {
	u.mu.Lock()
	if u.closed {
		u.mu.Unlock()
		return nil, ErrClosed
	}
	done = make(chan struct{})
	u.done = done
	u.state, u.reason = StateAuthenticating, ""
	u.began = time.Now()
	u.bytesDone.Store(0)
	u.bytesTotal.Store(0)
	u.mu.Unlock()
	u.log.Info("unlock: state", "state", StateAuthenticating)
	return done, nil
}

// end marks the workflow begun with done as no longer running and releases its waiters.
func (u *Unlocker) end(done chan struct{}) {
	u.mu.Lock()
	u.done = nil
	u.mu.Unlock()
	close(done)
}

// finish records the outcome of a workflow and returns the error as the caller should see it.
func (u *Unlocker) finish(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil {
		err = ErrInterrupted
	}
	outcome := string(StateReady)
	if err != nil {
		u.fail(err)
		outcome = string(StateError)
	} else {
		u.setState(StateReady)
	}
	u.mu.Lock()
	began, running := u.began, u.done != nil // not running: a precheck failed, no run began
	u.mu.Unlock()
	if u.cfg.Observer != nil && running {
		u.cfg.Observer.UnlockFinished(outcome, time.Since(began), u.bytesDone.Load())
	}
	return err
}

func (u *Unlocker) fail(err error) {
	u.mu.Lock()
	u.state, u.reason = StateError, err.Error()
	u.mu.Unlock()
	u.log.Error("unlock: failed", "state", StateError, "reason", err.Error())
}

func (u *Unlocker) setState(s State) {
	u.mu.Lock()
	u.state = s
	u.mu.Unlock()
	u.log.Info("unlock: state", "state", s)
}

// advance moves from one state to the next only if the workflow is still in the first.
func (u *Unlocker) advance(from, to State) {
	u.mu.Lock()
	ok := u.state == from
	if ok {
		u.state = to
	}
	u.mu.Unlock()
	if ok {
		u.log.Info("unlock: state", "state", to)
	}
}

// work is the workflow from logging in to the check after the load. The caller has set
// StateAuthenticating.
func (u *Unlocker) work(ctx context.Context, email, password string) error {
	if err := u.up.Login(ctx, email, password); err != nil {
		return fmt.Errorf("log in to the Resource API: %w", err)
	}

	u.setState(StateDownloadingKey)
	fragment, err := u.up.KeyFragment(ctx)
	if err != nil {
		return fmt.Errorf("fetch the archive key fragment: %w", err)
	}
	key := security.ArchiveKey(fragment)
	clear(fragment)
	defer clear(key)

	u.setState(StateDecrypting)
	if err := u.load(ctx, key); err != nil {
		return err
	}

	u.advance(StateDecrypting, StateLoadingImages)
	missing, err := u.missingImages(ctx)
	if err != nil {
		return err
	}
	switch len(missing) {
	case 0:
		return nil
	case 1:
		return fmt.Errorf("image %s missing after load", missing[0])
	default:
		return fmt.Errorf("images %s missing after load", strings.Join(missing, ", "))
	}
}

// load streams the decrypted archive into Docker. It checks the key on the last block first, so a
// wrong key sends nothing to Docker.
func (u *Unlocker) load(ctx context.Context, key []byte) error {
	path := u.cfg.ArchivePath
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: %s", ErrArchiveNotFound, path)
		}
		return fmt.Errorf("open the encrypted archive: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("open the encrypted archive: %w", err)
	}
	size := fi.Size()
	u.bytesTotal.Store(size)

	if _, err := security.PlaintextSize(f, size, key); err != nil {
		return archiveError(path, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	counted := &countingReader{r: f, n: &u.bytesDone, atEOF: func() { u.advance(StateDecrypting, StateLoadingImages) }}
	plain := &errReader{r: u.newDecrypter(counted, key)}
	loadErr := u.img.LoadImages(ctx, plain)
	// A broken archive is the reason, whatever Docker made of the cut-off stream.
	if plain.err != nil {
		return archiveError(path, plain.err)
	}
	if loadErr != nil {
		if errors.Is(loadErr, docker.ErrUnreachable) {
			return fmt.Errorf("%w; is dockerd running?", loadErr)
		}
		return fmt.Errorf("load the images into Docker: %w", loadErr)
	}
	// Docker may stop reading at the end of the tar: decrypt the rest too, so that the padding
	// is checked and the progress reaches the total.
	if _, err := io.Copy(io.Discard, plain); err != nil {
		return archiveError(path, err)
	}
	return nil
}

// missingImages returns the image:tag references Docker does not hold.
func (u *Unlocker) missingImages(ctx context.Context) ([]string, error) {
	var missing []string
	for _, ref := range u.refs {
		ok, err := u.img.ImageExists(ctx, ref)
		if err != nil {
			if errors.Is(err, docker.ErrUnreachable) {
				return nil, fmt.Errorf("%w; is dockerd running?", err)
			}
			return nil, fmt.Errorf("check image %s: %w", ref, err)
		}
		if !ok {
			missing = append(missing, ref)
		}
	}
	return missing, nil
}

// archiveError says what a failure to decrypt the archive means for the person who deployed it.
func archiveError(path string, err error) error {
	switch {
	case errors.Is(err, security.ErrWrongKey):
		return fmt.Errorf("the key fragment does not decrypt the archive %s (wrong key or corrupted archive): %w", path, err)
	case errors.Is(err, security.ErrTruncated):
		return fmt.Errorf("archive %s truncated: %w", path, err)
	default:
		return fmt.Errorf("read the encrypted archive %s: %w", path, err)
	}
}

// countingReader adds the bytes read to n and calls atEOF once r is exhausted.
type countingReader struct {
	r     io.Reader
	n     *atomic.Int64
	atEOF func()
	eof   bool
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	if err == io.EOF && !c.eof {
		c.eof = true
		c.atEOF()
	}
	return n, err
}

// errReader remembers the first error from r other than io.EOF.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF && e.err == nil {
		e.err = err
	}
	return n, err
}
