package unlock

// One run of the workflow, from the check of the images already loaded to its outcome: runs
// begin one at a time, each in a goroutine the Unlocker owns, and a run's outcome is recorded
// before the next may begin.

import (
	"context"
	"errors"
	"time"
)

// credentials are what a run logs in with; nil means the session the Upstream already holds.
type credentials struct{ email, password string }

// verdict is what the check of the loaded images decided for a run.
type verdict int

const (
	checking  verdict = iota
	loaded            // every image is there: ready, nothing else to do
	noArchive         // images missing and no archive: ErrArchiveNotFound, state unchanged
	failed            // the check itself failed (Docker unreachable): error
	proceed           // images missing, archive there: the workflow runs
)

// run is one workflow, from the check of the loaded images to its outcome.
type run struct {
	creds  *credentials
	cancel context.CancelFunc

	checked  chan struct{} // closed once verdict is set
	verdict  verdict
	checkErr error

	shown bool      // the run is what Status shows (from StateAuthenticating on); under mu
	began time.Time // when it was shown

	done chan struct{} // closed once the outcome is recorded
	err  error         // the outcome, as Run returns it
}

// begin returns the run under way (joined), or starts one with creds. It holds the lock only
// to look and to register: the run's calls to Docker and upstream happen in its own goroutine.
func (u *Unlocker) begin(creds *credentials) (r *run, joined bool, err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return nil, false, ErrClosed
	}
	if u.cur != nil {
		return u.cur, true, nil
	}
	ctx, cancel := context.WithCancel(u.base)
	r = &run{creds: creds, cancel: cancel, checked: make(chan struct{}), done: make(chan struct{})}
	u.cur = r
	u.notifyLocked()
	go u.execute(ctx, r) // owned by the Unlocker: Close cancels it and waits for it
	return r, false, nil
}

// execute is a run: the check, then the workflow if needed, then the outcome.
func (u *Unlocker) execute(ctx context.Context, r *run) {
	defer r.cancel()
	ready, err := u.precheck(ctx)
	u.mu.Lock()
	switch {
	case err == nil && ready:
		r.verdict = loaded
		u.state, u.reason = StateReady, ""
	case errors.Is(err, ErrArchiveNotFound) && !r.shown:
		r.verdict, r.checkErr = noArchive, err
	case err != nil:
		// Recorded before Start hears of it, so that Status agrees with its answer.
		err = interrupted(ctx, err)
		r.verdict, r.checkErr = failed, err
		u.state, u.reason = StateError, err.Error()
	default:
		r.verdict = proceed
	}
	first := r.verdict == proceed && u.showLocked(r)
	close(r.checked)
	u.mu.Unlock()

	switch r.verdict {
	case loaded:
		u.log.Info("unlock: images already loaded", "state", StateReady)
	case proceed:
		if first {
			u.log.Info("unlock: state", "state", StateAuthenticating)
		}
		err = u.work(ctx, r.creds)
	}
	u.end(ctx, r, err)
}

// showLocked makes r the run Status shows, in StateAuthenticating with no progress yet, unless
// it already is; it reports whether it was not. u.mu is held.
func (u *Unlocker) showLocked(r *run) bool {
	if r.shown {
		return false
	}
	r.shown, r.began = true, time.Now()
	u.state, u.reason = StateAuthenticating, ""
	u.bytesDone.Store(0)
	u.bytesTotal.Store(0)
	return true
}

// end records the outcome of r, and only then lets another run begin: the outcome of one run
// can never land on the next. It logs and reports the outcome first, so that nothing of the run
// is left to happen once it is over (Run has returned, Close has waited).
func (u *Unlocker) end(ctx context.Context, r *run, err error) {
	err = interrupted(ctx, err)
	switch r.verdict {
	case loaded:
		err = nil
	case noArchive, failed:
		err = r.checkErr // the state is already recorded
	}
	u.mu.Lock()
	shown, began := r.shown, r.began
	u.mu.Unlock()

	// A check that found nothing to do is no run, unless Start already showed it as one.
	if r.verdict != noArchive && (r.verdict != loaded || shown) {
		outcome := StateReady
		switch {
		case err != nil:
			outcome = StateError
			u.log.Error("unlock: failed", "state", StateError, "reason", err.Error())
		case r.verdict == proceed:
			u.log.Info("unlock: state", "state", StateReady)
		}
		if u.cfg.Observer != nil && shown {
			u.cfg.Observer.UnlockFinished(string(outcome), time.Since(began), u.bytesDone.Load())
		}
	}

	u.mu.Lock()
	if r.verdict == proceed {
		if err != nil {
			u.state, u.reason = StateError, err.Error()
		} else {
			u.state, u.reason = StateReady, ""
		}
	}
	r.err = err
	u.cur = nil
	u.notifyLocked()
	u.mu.Unlock()
	close(r.done)
}

// interrupted is err, or ErrInterrupted when the run was cancelled.
func interrupted(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil {
		return ErrInterrupted
	}
	return err
}

// notifyLocked wakes whoever waits on Changed. u.mu is held.
func (u *Unlocker) notifyLocked() {
	close(u.changed)
	u.changed = make(chan struct{})
}
