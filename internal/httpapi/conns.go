package httpapi

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// MaxConnsForFDLimit sizes the connection bound from the process's open-file limit: half of
// what is left after a reserve for log files, cache files and upstream connections, since a
// busy connection holds about one more descriptor (a cache file or an upstream socket).
// Between 16 and 4096.
func MaxConnsForFDLimit(nofile uint64) int {
	const reserve, lowest, highest = 64, 16, 4096
	if nofile <= reserve+2*lowest {
		return lowest
	}
	return int(min((nofile-reserve)/2, highest))
}

// ConnLimiter bounds the connections an http.Server holds open, so that slow or idle clients
// cannot use up the process's file descriptors and keep GET /health from being answered. At the
// bound, a new connection is accepted and the least useful open one is closed to make room:
// first an idle keep-alive connection, else the oldest of those that are late with their
// request header or still sending their request body (see rank). A connection whose request
// is being handled (a /load streaming its answer) is never closed. Only when every connection is
// such is the new one refused.
//
// Use it with Listener, and set the server's ConnState and ConnContext to its methods.
type ConnLimiter struct {
	max int
	log *slog.Logger

	mu       sync.Mutex
	conns    map[*trackedConn]struct{}
	evicted  int       // since the last log line
	lastLog  time.Time // of an eviction
	mEvicted prometheus.Counter
	mRefused prometheus.Counter
}

// NewConnLimiter returns a limiter of max connections. log and reg may be nil; reg receives
// the gauge of open connections and the counters of evicted and refused ones.
func NewConnLimiter(max int, log *slog.Logger, reg prometheus.Registerer) *ConnLimiter {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &ConnLimiter{
		max:   max,
		log:   log,
		conns: make(map[*trackedConn]struct{}),
		mEvicted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "azaion_loader_http_connections_evicted_total",
			Help: "Connections closed to make room for a new one at the connection bound.",
		}),
		mRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "azaion_loader_http_connections_refused_total",
			Help: "Connections refused at the bound because every open one was busy.",
		}),
	}
	if reg != nil {
		l.mEvicted = register(reg, l.mEvicted)
		l.mRefused = register(reg, l.mRefused)
		register(reg, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "azaion_loader_http_connections_open",
			Help: "HTTP connections open now.",
		}, func() float64 { return float64(l.Open()) }))
		register(reg, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "azaion_loader_http_connections_max",
			Help: "The bound on open HTTP connections.",
		}, func() float64 { return float64(l.max) }))
	}
	return l
}

// Max is the bound.
func (l *ConnLimiter) Max() int { return l.max }

// Open is the number of connections open now.
func (l *ConnLimiter) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

// Listener wraps ln so that its connections are counted and bounded.
func (l *ConnLimiter) Listener(ln net.Listener) net.Listener { return &limitListener{ln, l} }

// ConnState is the http.Server hook that tells the limiter what each connection is doing.
func (l *ConnLimiter) ConnState(c net.Conn, state http.ConnState) {
	tc, ok := c.(*trackedConn)
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	tc.state, tc.since = state, time.Now()
	if state != http.StateActive {
		tc.readingBody = false
	}
	if state == http.StateHijacked || state == http.StateClosed {
		delete(l.conns, tc)
	}
}

// ConnContext is the http.Server hook that lets a request's body guard find its connection.
func (l *ConnLimiter) ConnContext(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*trackedConn); ok {
		return context.WithValue(ctx, connKey{}, tc)
	}
	return ctx
}

type connKey struct{}

// connOf is the connection a request arrived on; nil without a ConnLimiter.
func connOf(ctx context.Context) *trackedConn {
	tc, _ := ctx.Value(connKey{}).(*trackedConn)
	return tc
}

// trackedConn is a connection the limiter counts. Its fields are guarded by the limiter's mu.
type trackedConn struct {
	net.Conn
	l           *ConnLimiter
	state       http.ConnState
	since       time.Time // when state (or, while reading a body, the body) began
	readingBody bool
	evicted     atomic.Bool // closed by the limiter to make room
	closeOnce   sync.Once
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
	return err
}

// wasEvicted reports whether the limiter closed c to make room; c may be nil.
func (c *trackedConn) wasEvicted() bool { return c != nil && c.evicted.Load() }

// setReadingBody marks the connection as sending its request body; c may be nil.
func (c *trackedConn) setReadingBody(on bool) {
	if c == nil {
		return
	}
	c.l.mu.Lock()
	defer c.l.mu.Unlock()
	if on && !c.readingBody {
		c.since = time.Now()
	}
	c.readingBody = on
}

// newConnGrace is how long a new connection has to send its request header before it ranks
// with the slow ones. Under a flood the accept loop runs ahead of the goroutines that read,
// and a client may be slow to write: without the grace, a GET /health on its way would be
// closed as a slow client. A header slowloris lasts up to ReadHeaderTimeout, far longer.
// Younger connections are closed only when there is nothing else, and never in their first
// newConnMinAge.
const (
	newConnGrace  = time.Second
	newConnMinAge = 100 * time.Millisecond
)

// rank orders eviction candidates at time now: lower goes first, the oldest first within a
// rank; -1 is never evicted.
func (c *trackedConn) rank(now time.Time) int {
	age := now.Sub(c.since)
	switch {
	case c.state == http.StateIdle:
		return 0
	case c.state == http.StateActive && c.readingBody, c.state == http.StateNew && age >= newConnGrace:
		return 1
	case c.state == http.StateNew && age >= newConnMinAge:
		return 2
	}
	return -1
}

// victim picks the connection to close for a new one, or nil. l.mu is held.
func (l *ConnLimiter) victim() *trackedConn {
	now := time.Now()
	var best *trackedConn
	bestRank := -1
	for c := range l.conns {
		r := c.rank(now)
		if r < 0 {
			continue
		}
		if best == nil || r < bestRank || r == bestRank && c.since.Before(best.since) {
			best, bestRank = c, r
		}
	}
	if best != nil {
		best.evicted.Store(true)
	}
	return best
}

// admit counts a new connection, closing another if the bound is reached. It reports false if
// c must be refused instead.
func (l *ConnLimiter) admit(c *trackedConn) bool {
	l.mu.Lock()
	var v *trackedConn
	if len(l.conns) >= l.max {
		if v = l.victim(); v == nil {
			l.mu.Unlock()
			l.mRefused.Inc()
			return false
		}
		delete(l.conns, v)
	}
	l.conns[c] = struct{}{}
	logNow := false
	if v != nil {
		l.evicted++
		// An attack evicts hundreds a second: one line per 10 s says enough.
		if now := time.Now(); now.Sub(l.lastLog) >= 10*time.Second {
			logNow, l.lastLog = true, now
		}
	}
	evicted := l.evicted
	if logNow {
		l.evicted = 0
	}
	l.mu.Unlock()
	if v != nil {
		l.mEvicted.Inc()
		v.Conn.Close() // its server goroutine sees the error and ends
		if logNow {
			l.log.Warn("at the connection bound: closed slow or idle connections to make room",
				"max", l.max, "closed", evicted)
		}
	}
	return true
}

// evictForFD closes one connection after accept failed for want of file descriptors (other
// files may hold more than the bound foresaw). It reports whether one was closed.
func (l *ConnLimiter) evictForFD() bool {
	l.mu.Lock()
	v := l.victim()
	if v != nil {
		delete(l.conns, v)
	}
	l.mu.Unlock()
	if v == nil {
		return false
	}
	l.mEvicted.Inc()
	v.Conn.Close()
	return true
}

type limitListener struct {
	net.Listener
	l *ConnLimiter
}

func (ln *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// http.Server retries a temporary error after a pause; make the retry work.
				ln.l.evictForFD()
			}
			return nil, err
		}
		tc := &trackedConn{Conn: c, l: ln.l, state: http.StateNew, since: time.Now()}
		if ln.l.admit(tc) {
			return tc, nil
		}
		c.Close()
	}
}
