package streams

import (
	"sync/atomic"
	"time"
)

// Watchdog calls fire once no progress has been reported for its timeout: a stream that stalls
// is cut off, however long it takes as a whole while it moves. Progress is cheap (an atomic
// store, no timer reset per read) and safe from any goroutine; pass it to OnRead.
type Watchdog struct {
	timeout time.Duration
	fire    func()
	last    atomic.Int64 // UnixNano of the last progress
	stopped atomic.Bool
	fired   atomic.Bool
	t       *time.Timer
}

// NewWatchdog starts a watchdog; the time without progress starts now. Stop it when done.
func NewWatchdog(timeout time.Duration, fire func()) *Watchdog {
	w := &Watchdog{timeout: timeout, fire: fire}
	w.Progress(0)
	w.t = time.AfterFunc(timeout, w.check)
	return w
}

// Progress says the stream moved (n bytes; the count is not used).
func (w *Watchdog) Progress(int) { w.last.Store(time.Now().UnixNano()) }

// check runs on the timer: it fires, or re-arms the timer for the rest of the timeout.
func (w *Watchdog) check() {
	if w.stopped.Load() {
		return
	}
	idle := time.Since(time.Unix(0, w.last.Load()))
	if idle >= w.timeout {
		w.fired.Store(true)
		w.fire()
		return
	}
	w.t.Reset(w.timeout - idle)
}

// Fired reports whether the watchdog called fire.
func (w *Watchdog) Fired() bool { return w.fired.Load() }

// Stop stops the watchdog; fire is not called after Stop returns unless it had already begun.
func (w *Watchdog) Stop() {
	w.stopped.Store(true)
	w.t.Stop()
}
