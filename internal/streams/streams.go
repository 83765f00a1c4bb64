// Package streams holds the io.Reader wrappers the streaming paths share (uploads, unlock,
// archive verify, Docker image loads, Resource API request bodies). Each does one thing and
// wraps any io.Reader, so they compose as io's and crypto/cipher's readers do:
//
//	rec := streams.RecordErr(streams.Count(body, &n)) // count the bytes, keep the first error
//
// The package knows no protocol, no key and no name: it is plumbing, which the reference
// Resource API (internal/refapi) may share with the loader without sharing the contract.
package streams

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
)

// ErrRecorder passes reads through and remembers the first error other than io.EOF that its
// reader returned. After io.Copy fails, Err tells a failing source (a client that went away,
// a truncated archive) from a failing destination (a full disk, a daemon that stopped reading).
type ErrRecorder struct {
	r   io.Reader
	err error
}

// RecordErr returns an ErrRecorder reading r.
func RecordErr(r io.Reader) *ErrRecorder { return &ErrRecorder{r: r} }

func (e *ErrRecorder) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF && e.err == nil {
		e.err = err
	}
	return n, err
}

// Err is the first error other than io.EOF the reader returned, nil if none.
func (e *ErrRecorder) Err() error { return e.err }

// ErrDetached is what a Detachable's reads return once it is detached.
var ErrDetached = errors.New("reader detached")

// Detachable passes reads through until Detach; then reads fail with ErrDetached without
// touching its reader. It is for a reader handed to something that may go on reading after
// the caller has moved on (an HTTP transport still sending a request body after the answer
// came): once Detach returns, the caller owns its reader again.
type Detachable struct {
	mu       sync.Mutex
	r        io.Reader
	detached bool
}

// NewDetachable returns a Detachable reading r.
func NewDetachable(r io.Reader) *Detachable { return &Detachable{r: r} }

func (d *Detachable) Read(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.detached {
		return 0, ErrDetached
	}
	return d.r.Read(p)
}

// Detach waits for a Read in progress to return, and makes every later one fail. What the
// wrapped readers recorded (an ErrRecorder's Err, say) is settled once it returns.
func (d *Detachable) Detach() {
	d.mu.Lock()
	d.detached = true
	d.mu.Unlock()
}

// OnRead returns a reader that calls f with the byte count of every Read of r that returned
// bytes, before handing them on: progress for a watchdog, a timer reset, a counter.
func OnRead(r io.Reader, f func(n int)) io.Reader { return &onRead{r: r, f: f} }

type onRead struct {
	r io.Reader
	f func(n int)
}

func (o *onRead) Read(p []byte) (int, error) {
	n, err := o.r.Read(p)
	if n > 0 {
		o.f(n)
	}
	return n, err
}

// Count returns a reader that adds the bytes read from r to *n, which others may read
// meanwhile (a progress figure).
func Count(r io.Reader, n *atomic.Int64) io.Reader {
	return OnRead(r, func(k int) { n.Add(int64(k)) })
}

// AtEOF returns a reader that calls f once, when r first returns io.EOF (before that Read
// returns).
func AtEOF(r io.Reader, f func()) io.Reader { return &atEOF{r: r, f: f} }

type atEOF struct {
	r    io.Reader
	f    func()
	done bool
}

func (a *atEOF) Read(p []byte) (int, error) {
	n, err := a.r.Read(p)
	if err == io.EOF && !a.done {
		a.done = true
		a.f()
	}
	return n, err
}

// ReadCloser pairs r, a wrapper of c's reads, with c's Close: a wrapped HTTP body stays an
// io.ReadCloser, as io.NopCloser makes one of a reader that needs no closing.
func ReadCloser(r io.Reader, c io.Closer) io.ReadCloser {
	return struct {
		io.Reader
		io.Closer
	}{r, c}
}

// WithContext returns a reader that fails with ctx's error once ctx is done, so that a long
// copy stops when its caller gives up (SIGINT, a shutdown). A Read already waiting on r is not
// interrupted: it ends when r's does.
func WithContext(ctx context.Context, r io.Reader) io.Reader { return ctxReader{ctx, r} }

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
