package testenv

import (
	"context"
	"sync"
)

// WatchedContext is a context that is never cancelled and tells when the code under test first
// asks for its Done channel: code asks for it only when it is about to wait, so "the second
// caller is waiting" becomes an event a test can wait for instead of a guess made with a sleep.
type WatchedContext struct {
	context.Context
	once    sync.Once
	watched chan struct{}
}

// NewWatchedContext returns a WatchedContext nobody waits on yet.
func NewWatchedContext() *WatchedContext {
	return &WatchedContext{Context: context.Background(), watched: make(chan struct{})}
}

// Done is the background context's Done, and marks the context as waited on.
func (w *WatchedContext) Done() <-chan struct{} {
	w.once.Do(func() { close(w.watched) })
	return w.Context.Done()
}

// Watched is closed once somebody has asked for Done.
func (w *WatchedContext) Watched() <-chan struct{} { return w.watched }

// Waited reports whether somebody has asked for Done yet.
func (w *WatchedContext) Waited() bool {
	select {
	case <-w.watched:
		return true
	default:
		return false
	}
}
