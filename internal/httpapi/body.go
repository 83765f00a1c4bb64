package httpapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// DefaultBodyTimeout is Config.BodyTimeout's default (SPEC §2: 30 s).
const DefaultBodyTimeout = 30 * time.Second

// MinUploadProgress is what an upload body must deliver per Config.BodyTimeout (SPEC §2).
const MinUploadProgress = 1 << 10

// Errors for what happened to the connection rather than what the request said.
var (
	// errBodyTimeout: the request body was too slow (408); see bodyGuard.
	errBodyTimeout = errors.New("request body too slow")
	// errClientGone: a read from or a write to the client failed: it went away (499).
	errClientGone = errors.New("the client went away")
)

// statusClientGone is what the log and the metrics say of a request whose client went away
// before it was answered (nginx's number): it is no failure of the service.
const statusClientGone = 499

// requestState is what the middleware learns about one request while it runs. It lives in
// the request's context, where writeError and the body guard find it.
type requestState struct {
	timedOut   atomic.Bool // the body was too slow: answered 408
	clientGone atomic.Bool // a read from or a write to the client failed
}

type stateKey struct{}

// stateOf returns r's requestState; a fresh one when r did not pass through observe.
func stateOf(r *http.Request) *requestState {
	if st, ok := r.Context().Value(stateKey{}).(*requestState); ok {
		return st
	}
	return &requestState{}
}

// detach gives the handlers a context that the client's going away does not cancel, and a
// guarded body. net/http cancels a request's context when a read on the connection ends,
// which after a complete body is also what a client that half-closes (shutdown(SHUT_WR)) and
// waits for its answer causes: a complete request must not fail for that. A client that is
// really gone is noticed when a write to it fails (goneWriter), and a body it left unfinished
// fails its reads (bodyGuard); every upstream call has its own deadline.
func (s *Server) detach(w http.ResponseWriter, r *http.Request, st *requestState, start time.Time) (*http.Request, func()) {
	orig := r.Context()
	stop := context.AfterFunc(orig, func() {
		s.log.Debug("the client closed its end of the connection; the request goes on",
			"method", r.Method, "path", r.URL.Path)
	})
	ctx := context.WithValue(context.WithoutCancel(orig), stateKey{}, st)
	r = r.WithContext(ctx)
	if r.Body != nil && r.Body != http.NoBody {
		g := &bodyGuard{body: r.Body, rc: http.NewResponseController(w), st: st, conn: connOf(orig),
			timeout: s.bodyTimeout, progress: strings.HasPrefix(r.URL.Path, "/upload/")}
		g.start(start)
		r.Body = g
	}
	return r, func() { stop() }
}

// bodyGuard bounds how slowly a request body may arrive, so a slow client cannot pin a
// connection and a goroutine (SPEC §2). A JSON body (progress false) must arrive whole within
// timeout of the request's start; an upload body (progress true) must deliver at least
// MinUploadProgress bytes per timeout spent waiting for it, silent or trickling. Only the time
// spent waiting in Read counts, so a handler that reads slowly (a slow disk, a slow CDN) is not
// taken for a slow client. The deadline is the connection's read deadline, so a Read blocked
// on a silent client ends too; it is cleared at the end of the body, because net/http then
// keeps reading the connection in the background to notice a client that goes away.
//
// Reads that fail because of the client return errClientGone, too slow errBodyTimeout; both
// are also recorded in the requestState, which decides the answer whatever a handler makes of
// the error.
type bodyGuard struct {
	body     io.ReadCloser
	rc       *http.ResponseController
	st       *requestState
	conn     *trackedConn // nil without a ConnLimiter
	timeout  time.Duration
	progress bool

	deadline time.Time     // !progress: when the whole body must be in
	waited   time.Duration // progress: time spent in Read since the window began
	got      int64         // progress: bytes received since the window began
	err      error         // sticky, once the body ended or failed
}

func (g *bodyGuard) start(now time.Time) {
	g.deadline = now.Add(g.timeout)
	g.conn.setReadingBody(true)
	// Also bounds what net/http discards of a body the handler did not read.
	g.rc.SetReadDeadline(g.deadline)
}

func (g *bodyGuard) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	if g.progress {
		g.rc.SetReadDeadline(time.Now().Add(g.timeout - g.waited))
	}
	t0 := time.Now()
	n, err := g.body.Read(p)
	if g.progress {
		g.waited += time.Since(t0)
		if g.got += int64(n); g.got >= MinUploadProgress {
			g.got, g.waited = 0, 0
		}
	}
	switch {
	case err == nil:
		return n, nil
	case err == io.EOF:
		g.end()
	case isTimeout(err):
		g.st.timedOut.Store(true)
		if g.progress {
			err = &requestError{errBodyTimeout, fmt.Sprintf("the upload delivered less than %d bytes in %s", MinUploadProgress, g.timeout)}
		} else {
			err = &requestError{errBodyTimeout, fmt.Sprintf("the request body did not arrive within %s", g.timeout)}
		}
		// The deadline stays: what net/http discards of the body after the 408 must fail
		// at once, so the connection is closed instead of waiting for the rest.
		g.conn.setReadingBody(false)
	default: // a reset, or a connection closed before the body was complete
		g.st.clientGone.Store(true)
		err = fmt.Errorf("%w: reading the request body: %w", errClientGone, err)
		g.end()
	}
	g.err = err
	return n, err
}

// end clears the deadline once the body is over (see bodyGuard).
func (g *bodyGuard) end() {
	g.rc.SetReadDeadline(time.Time{})
	g.conn.setReadingBody(false)
}

func (g *bodyGuard) Close() error { return g.body.Close() }

// isTimeout reports a read that ended at its deadline.
func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// bodyError passes on an error of the body guard as it is, and makes any other an invalid
// request with the given description: used where a parser reports the body's read errors.
func bodyError(err error, format string, a ...any) error {
	if errors.Is(err, errBodyTimeout) || errors.Is(err, errClientGone) {
		return err
	}
	return invalid(format+": %v", append(a, err)...)
}
