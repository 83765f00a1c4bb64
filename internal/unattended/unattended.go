// Package unattended brings a device that has a device identity (SPEC §10) to ready with nobody
// at a keyboard: at start it logs in with the identity and then, when the encrypted archive is
// there and the images are not all loaded, runs the unlock workflow with that session.
//
// Failures that may pass (the Resource API or Docker unreachable, timing out, answering 5xx or
// 429) are retried, for ever, after a capped exponential backoff with full jitter; a 429's
// Retry-After is waited out. A permanent refusal (see Permanent) stops the work: one attempt,
// then StateFailed with the reason. Cancelling the context given to Start (SIGTERM) ends a
// waiting retry at once.
//
// An operator's POST /login and POST /unlock take precedence:
//   - The work logs in only while the loader holds no session. An operator's successful login
//     ends a login that waits for its retry (call LoggedIn), and the unlock then uses the
//     operator's session: the work never logs in over it. (Logins never run side by side:
//     resourceapi serialises them.)
//   - An operator's unlock that starts while the work waits for its retry runs at once; the work
//     wakes, starts no run of its own, waits for the operator's and is done if it ends ready
//     (or retries on its schedule if it does not).
//   - StateFailed is final for this process: the operator may still log in and unlock by hand.
package unattended

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/azaion/loader/internal/device"
	"github.com/azaion/loader/internal/docker"
	"github.com/azaion/loader/internal/resourceapi"
	"github.com/azaion/loader/internal/security"
	"github.com/azaion/loader/internal/unlock"
)

// State is the unattended work's state, as GET /status shows it.
type State string

const (
	StateOff     State = "off"     // no device identity
	StateWaiting State = "waiting" // a retry is scheduled at Status.NextAttemptAt
	StateWorking State = "working" // an attempt is under way
	StateDone    State = "done"    // logged in, and the images are ready (or there is no archive)
	StateFailed  State = "failed"  // refused for good; Status.LastError says why
)

// Status is a snapshot of the unattended work.
type Status struct {
	State         State
	Attempts      int       // attempts made so far, logins and unlocks
	NextAttemptAt time.Time // zero unless State is StateWaiting
	LastError     string    // the last failure's reason; empty when there is none or the work is done
}

// Auth is the session with the Resource API.
type Auth interface {
	// Login logs in (cdn.yaml included) and keeps the session.
	Login(ctx context.Context, email, password string) error
	// LoggedIn reports whether a session is held (the work's own, or an operator's).
	LoggedIn() bool
}

// Unlocker is the unlock workflow (unlock.Unlocker).
type Unlocker interface {
	// HasArchive reports whether the encrypted archive is there.
	HasArchive() bool
	// Ensure brings the images to ready with the session Auth holds, or waits for a run already
	// under way (joined); see unlock.Unlocker.Ensure.
	Ensure(ctx context.Context) (joined bool, err error)
	// Changed is closed when a run next begins or ends.
	Changed() <-chan struct{}
}

// Observer counts attempts, for metrics.
type Observer interface {
	// UnattendedAttempt reports one attempt of step ("login" or "unlock") and its outcome:
	// "ok", "retry" (it failed and will be retried) or "failed" (it failed for good).
	UnattendedAttempt(step, outcome string)
}

// Config configures a Runner.
type Config struct {
	// Identity is the device identity; nil means none, and the Runner stays StateOff.
	Identity *device.Identity
	Backoff  Backoff
	Logger   *slog.Logger // nil discards
	Observer Observer     // nil: none
}

// Runner is the unattended work. It is safe for concurrent use.
type Runner struct {
	cfg  Config
	auth Auth
	unl  Unlocker
	log  *slog.Logger

	loggedIn chan struct{} // an operator logged in; buffered, one pending wake is enough
	done     chan struct{} // closed when the work has stopped; nil before Start

	mu     sync.Mutex
	status Status
}

// New returns a Runner that does nothing until Start.
func New(cfg Config, auth Auth, unl Unlocker) *Runner {
	cfg.Backoff = cfg.Backoff.withDefaults()
	r := &Runner{cfg: cfg, auth: auth, unl: unl, log: cfg.Logger, loggedIn: make(chan struct{}, 1)}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.status.State = StateOff
	if cfg.Identity != nil {
		r.status.State = StateWorking
	}
	return r
}

// Start runs the work in the background until it is done, has failed, or ctx ends. Without an
// identity it does nothing.
func (r *Runner) Start(ctx context.Context) {
	r.done = make(chan struct{})
	if r.cfg.Identity == nil {
		close(r.done)
		return
	}
	go func() { // owned by the Runner: ctx stops it, Wait waits for it
		defer close(r.done)
		r.run(ctx)
	}()
}

// Wait waits until the work started by Start has stopped.
func (r *Runner) Wait() {
	if r.done != nil {
		<-r.done
	}
}

// Status is a snapshot for GET /status.
func (r *Runner) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status
}

// LoggedIn tells the Runner that an operator has logged in: a login waiting for its retry is
// not needed any more.
func (r *Runner) LoggedIn() {
	select {
	case r.loggedIn <- struct{}{}:
	default:
	}
}

// Step names, as the metrics label them.
const (
	stepLogin  = "login"
	stepUnlock = "unlock"
)

func (r *Runner) run(ctx context.Context) {
	id := r.cfg.Identity
	r.log.Info("unattended: starting with the device identity", "state", StateWorking)
	failures := 0 // consecutive, for the backoff
	for {
		step := stepLogin
		var err error
		var joined bool
		switch {
		case !r.auth.LoggedIn():
			r.begin()
			err = r.auth.Login(ctx, id.Email, id.Password)
		case !r.unl.HasArchive():
			r.finish("no encrypted archive: nothing to unlock")
			return
		default:
			step = stepUnlock
			r.begin()
			joined, err = r.unl.Ensure(ctx)
			if errors.Is(err, unlock.ErrArchiveNotFound) { // the archive went away meanwhile
				r.count(step, "ok")
				r.finish("no encrypted archive: nothing to unlock")
				return
			}
		}
		if ctx.Err() != nil || errors.Is(err, unlock.ErrClosed) {
			return // shutting down: not an outcome
		}
		switch {
		case err == nil && step == stepLogin:
			r.count(step, "ok")
			r.log.Info("unattended: logged in with the device identity")
			failures = 0
		case err == nil:
			r.count(step, "ok")
			r.finish("images ready")
			return
		case Permanent(err) && !joined:
			r.count(step, "failed")
			r.fail(step, err)
			return
		default:
			r.count(step, "retry")
			failures++
			wake := r.unl.Changed() // an operator's unlock
			if step == stepLogin {
				wake = r.loggedIn
			}
			if !r.retryLater(ctx, step, err, r.delay(failures, err), wake) {
				return
			}
		}
	}
}

// Permanent reports whether err is a refusal that retrying cannot change (SPEC §10): the
// credentials rejected or the device refused (401/403), a key fragment that does not decrypt the
// archive, a truncated archive, an archive Docker refuses, an image missing after the load.
// Everything else (unreachable, timeouts, 5xx, 429, Docker not answering) may pass.
func Permanent(err error) bool {
	for _, target := range []error{
		resourceapi.ErrUnauthorized, resourceapi.ErrForbidden,
		security.ErrWrongKey, security.ErrTruncated,
		docker.ErrRejected, unlock.ErrImagesMissing,
	} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// delay is the wait before the retry after the n-th consecutive failure: the backoff, or the
// API's Retry-After when that is longer.
func (r *Runner) delay(n int, err error) time.Duration {
	d := r.cfg.Backoff.Delay(n)
	if ra, ok := errors.AsType[*resourceapi.RetryAfterError](err); ok {
		d = max(d, ra.After)
	}
	return d
}

// retryLater shows StateWaiting until d has passed, ctx ends (false) or wake is closed or sent
// to (an operator acted: try again now).
func (r *Runner) retryLater(ctx context.Context, step string, err error, d time.Duration, wake <-chan struct{}) bool {
	next := time.Now().Add(d)
	r.mu.Lock()
	r.status.State, r.status.NextAttemptAt, r.status.LastError = StateWaiting, next, err.Error()
	attempts := r.status.Attempts
	r.mu.Unlock()
	r.log.Warn("unattended: attempt failed, will retry", "state", StateWaiting, "step", step, "attempt", attempts,
		"retryIn", d.Round(time.Millisecond).String(), "err", err.Error())
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	case <-wake:
		r.log.Info("unattended: an operator acted, trying again now", "step", step)
	}
	return true
}

// begin marks an attempt under way.
func (r *Runner) begin() {
	r.mu.Lock()
	r.status.State, r.status.NextAttemptAt = StateWorking, time.Time{}
	r.status.Attempts++
	r.mu.Unlock()
}

func (r *Runner) finish(what string) {
	r.mu.Lock()
	r.status.State, r.status.NextAttemptAt, r.status.LastError = StateDone, time.Time{}, ""
	r.mu.Unlock()
	r.log.Info("unattended: done", "state", StateDone, "result", what)
}

func (r *Runner) fail(step string, err error) {
	r.mu.Lock()
	r.status.State, r.status.NextAttemptAt, r.status.LastError = StateFailed, time.Time{}, err.Error()
	r.mu.Unlock()
	r.log.Error("unattended: refused for good, no more attempts", "state", StateFailed, "step", step, "reason", err.Error())
}

func (r *Runner) count(step, outcome string) {
	if r.cfg.Observer != nil {
		r.cfg.Observer.UnattendedAttempt(step, outcome)
	}
}

// Backoff is capped exponential backoff with full jitter: the wait before the retry after the
// n-th consecutive failure is uniformly random in [0, min(Max, First·2^(n-1))].
type Backoff struct {
	First time.Duration // the first cap; default DefaultFirstDelay
	Max   time.Duration // RETRY_MAX_DELAY; default DefaultMaxDelay
	// Jitter returns a duration in [0, limit]; nil means uniformly random. Tests fix it.
	Jitter func(limit time.Duration) time.Duration
}

// Defaults of Backoff (SPEC §10).
const (
	DefaultFirstDelay = time.Second
	DefaultMaxDelay   = 5 * time.Minute
)

func (b Backoff) withDefaults() Backoff {
	if b.First <= 0 {
		b.First = DefaultFirstDelay
	}
	if b.Max <= 0 {
		b.Max = DefaultMaxDelay
	}
	if b.Jitter == nil {
		b.Jitter = func(limit time.Duration) time.Duration { return rand.N(limit + 1) }
	}
	return b
}

// Limit is the cap of the wait after the n-th consecutive failure (n ≥ 1).
func (b Backoff) Limit(n int) time.Duration {
	b = b.withDefaults()
	limit := min(b.First, b.Max)
	for i := 1; i < n && limit < b.Max; i++ {
		limit = min(2*limit, b.Max) // no overflow: limit stays at most Max
	}
	return limit
}

// Delay is the wait after the n-th consecutive failure: Jitter(Limit(n)), kept within it.
func (b Backoff) Delay(n int) time.Duration {
	b = b.withDefaults()
	limit := b.Limit(n)
	return min(max(b.Jitter(limit), 0), limit)
}
