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
//
// No lock is held across a call to Docker or the Resource API (SPEC §10). A run begins with the
// check of the images already loaded, in the background like the rest of it; Start waits for
// that check only up to Config.AnswerWithin, so a hung daemon cannot hold up POST /unlock, and
// Status never waits at all.
package unlock

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/azaion/loader/internal/security"
)

// Upstream is what the workflow needs of the Resource API.
type Upstream interface {
	Login(ctx context.Context, email, password string) error
	KeyFragment(ctx context.Context) ([]byte, error)
}

// Images is what the workflow needs of the Docker daemon. LoadImages must not read r after it
// returns. Both must return in bounded time (docker.Engine has a timeout on each call).
type Images interface {
	LoadImages(ctx context.Context, r io.Reader) error
	ImageExists(ctx context.Context, ref string) (bool, error)
}

// DefaultAnswerWithin is Config.AnswerWithin's default.
const DefaultAnswerWithin = time.Second

// Config says which archive to unlock and which images it must yield.
type Config struct {
	ArchivePath string   // the encrypted archive, IV ‖ AES-256-CBC(PKCS#7(tar))
	Images      []string // repositories without tag (DOCKER_IMAGES; config.DefaultImages by default)
	Tag         string   // the tag every image must carry (API_VERSION); empty means "latest"
	Logger      *slog.Logger
	// Observer is told how each run ended, for metrics; nil means none.
	Observer Observer
	// AnswerWithin bounds how long Start waits for Docker to say whether the images are
	// already loaded; 0 means DefaultAnswerWithin. Past it, Start answers StateAuthenticating
	// and the run goes on (and ends in error if Docker does not answer within its own timeout).
	AnswerWithin time.Duration
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
	// ErrImagesMissing: the archive loaded, but an image it should hold is not in Docker.
	ErrImagesMissing = errors.New("missing after load")
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

	// base is the parent of every run; Close cancels it.
	base     context.Context
	stopBase context.CancelFunc

	bytesDone  atomic.Int64
	bytesTotal atomic.Int64

	mu      sync.Mutex
	state   State
	reason  string        // set with StateError
	cur     *run          // the run under way; nil when none
	changed chan struct{} // closed and replaced when a run begins or ends
	closed  bool
}

// New returns an Unlocker in StateIdle. It starts nothing.
func New(cfg Config, up Upstream, img Images) *Unlocker {
	if cfg.Tag == "" {
		cfg.Tag = "latest"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.AnswerWithin <= 0 {
		cfg.AnswerWithin = DefaultAnswerWithin
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
		state:        StateIdle,
		changed:      make(chan struct{}),
	}
}

// Status is a snapshot of the current state and progress. It never waits on a run.
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

// Changed returns a channel that is closed when a run next begins or ends.
func (u *Unlocker) Changed() <-chan struct{} {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.changed
}

// HasArchive reports whether the encrypted archive is there.
func (u *Unlocker) HasArchive() bool {
	fi, err := os.Stat(u.cfg.ArchivePath)
	return err == nil && fi.Mode().IsRegular()
}

// Start is POST /unlock. When a run is under way it answers that run's state at once and starts
// no other. Otherwise it starts a run in the background, owned by the Unlocker and not by ctx,
// and waits up to Config.AnswerWithin for the run's first step, the check of the images already
// loaded, to answer:
//   - every image is loaded: StateReady (no call upstream);
//   - the archive is missing and the images are not loaded: ErrArchiveNotFound;
//   - the check failed (Docker unreachable): the run has ended in StateError, and so answers;
//   - the images are to be loaded, or Docker has not answered yet: StateAuthenticating.
//
// The credentials go to that run only and are not kept after it. ctx bounds only the wait.
func (u *Unlocker) Start(ctx context.Context, email, password string) (State, error) {
	r, joined, err := u.begin(&credentials{email, password})
	if err != nil {
		return "", err
	}
	if joined {
		u.mu.Lock()
		st, shown := u.state, r.shown
		u.mu.Unlock()
		if shown {
			return st, nil
		}
	}
	timer := time.NewTimer(u.cfg.AnswerWithin)
	defer timer.Stop()
	select {
	case <-r.checked:
	case <-timer.C:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	return u.answer(r, joined)
}

// answer is what Start says about r once its check has decided, or once Start stops waiting.
func (u *Unlocker) answer(r *run, joined bool) (State, error) {
	select {
	case <-r.checked:
		if r.verdict != proceed {
			<-r.done // decided without work, and over at once: the next POST starts a new run
		}
	default:
		u.mu.Lock()
		select {
		case <-r.checked: // decided meanwhile
			u.mu.Unlock()
			return u.answer(r, joined)
		default:
		}
		// Docker is slow: the run goes on, and shows from now on. A check that then finds the
		// images loaded ends it ready; any other outcome ends it in error.
		first := u.showLocked(r)
		u.mu.Unlock()
		if first {
			u.log.Info("unlock: state", "state", StateAuthenticating, "note", "docker has not answered yet")
		}
		return StateAuthenticating, nil
	}
	switch r.verdict {
	case loaded:
		return StateReady, nil
	case noArchive:
		return "", r.checkErr
	case failed:
		return StateError, nil
	}
	if joined {
		return u.Status().State, nil
	}
	return StateAuthenticating, nil
}

// Run is the same workflow as Start, run synchronously (azaion-loader unlock). It returns nil
// when the images are loaded (or already were), ErrArchiveNotFound (wrapped) when the archive is
// missing and they are not, ErrRunning when a workflow is already running, and otherwise the
// error that put the Unlocker in StateError. Cancelling ctx, or Close, interrupts it.
func (u *Unlocker) Run(ctx context.Context, email, password string) error {
	r, joined, err := u.begin(&credentials{email, password})
	if err != nil {
		return err
	}
	if joined {
		return ErrRunning
	}
	stop := context.AfterFunc(ctx, r.cancel)
	defer stop()
	<-r.done
	return r.err
}

// Ensure brings the images to ready for the unattended work of SPEC §10, with the session the
// Upstream already holds (it logs in with no credentials of its own). It returns nil when the
// images are loaded (or already were), ErrArchiveNotFound (wrapped) when the archive is missing
// and they are not, or the error of the run. When a run is already under way (an operator's POST
// /unlock) it starts none: it waits for that one and reports its outcome with joined set.
// Cancelling ctx stops the wait, not the run.
func (u *Unlocker) Ensure(ctx context.Context) (joined bool, err error) {
	r, joined, err := u.begin(nil)
	if err != nil {
		return false, err
	}
	select {
	case <-r.done:
		return joined, r.err
	case <-ctx.Done():
		return joined, ctx.Err()
	}
}

// Wait waits until no workflow is running.
func (u *Unlocker) Wait() {
	u.mu.Lock()
	r := u.cur
	u.mu.Unlock()
	if r != nil {
		<-r.done
	}
}

// Close interrupts a running workflow, which ends in StateError "interrupted", and waits for it
// to stop. Start, Run and Ensure fail with ErrClosed afterwards.
func (u *Unlocker) Close() {
	u.mu.Lock()
	u.closed = true
	u.mu.Unlock()
	u.stopBase()
	u.Wait()
}
