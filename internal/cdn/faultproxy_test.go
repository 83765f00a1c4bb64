package cdn_test

// A TCP proxy to MinIO that cuts or stalls its connections on purpose, for the resume tests.

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// proxy is a TCP proxy to MinIO that misbehaves on purpose: for its i-th connection (counted
// from the last setPolicy), policy(i) says after how many bytes of the answer to cut the
// connection (stall false) or to stop forwarding while keeping it open (stall true); a
// negative limit forwards everything. Each cut and each stall is reported on events once
// the limit's bytes have been forwarded.
type proxy struct {
	ln     net.Listener
	target string
	events chan proxyEvent

	mu      sync.Mutex
	trickle time.Duration // when set, a stalled connection forwards one byte per trickle
	policy  func(i int) (limit int64, stall bool)
	gen     int // how many times setPolicy was called
	conns   []net.Conn
	n       int
	closed  chan struct{}
	wg      sync.WaitGroup
}

// proxyEvent is a cut or a stall of connection conn (numbered as policy saw it) under the
// policy of generation gen (0 for startProxy's, 1 for the first setPolicy's, ...).
type proxyEvent struct {
	gen, conn int
	stall     bool
}

func startProxy(t *testing.T, target string, policy func(i int) (int64, bool)) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, policy: policy, closed: make(chan struct{}),
		events: make(chan proxyEvent, 64)}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

func (p *proxy) Addr() string { return p.ln.Addr().String() }

// setPolicy makes policy decide for every connection accepted from now on, numbered from 0
// again, whatever the connections before it were.
func (p *proxy) setPolicy(policy func(i int) (int64, bool)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.policy, p.n = policy, 0
	p.gen++
}

func (p *proxy) Close() {
	p.mu.Lock()
	select {
	case <-p.closed:
	default:
		close(p.closed)
		p.ln.Close()
		for _, c := range p.conns {
			c.Close()
		}
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.closed:
		c.Close()
		return false
	default:
		p.conns = append(p.conns, c)
		return true
	}
}

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(client) {
			return
		}
		p.mu.Lock()
		i, gen, policy := p.n, p.gen, p.policy
		p.n++
		p.mu.Unlock()
		p.wg.Add(1)
		go p.serve(client, gen, i, policy)
	}
}

func (p *proxy) serve(client net.Conn, gen, i int, policy func(int) (int64, bool)) {
	defer p.wg.Done()
	defer client.Close()
	limit, stall := policy(i)
	server, err := net.Dial("tcp", p.target)
	if err != nil || !p.track(server) {
		return
	}
	defer server.Close()
	upDone := make(chan struct{})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer close(upDone)
		_, _ = io.Copy(server, client)
		// The client went away: so does the connection to MinIO, ending the copy below.
		server.Close()
	}()
	if limit < 0 {
		_, _ = io.Copy(client, server)
	} else if n, _ := io.CopyN(client, server, limit); n == limit {
		if !stall {
			client.Close()
		}
		select {
		case p.events <- proxyEvent{gen: gen, conn: i, stall: stall}:
		default:
		}
		p.mu.Lock()
		trickle := p.trickle
		p.mu.Unlock()
		switch {
		case stall && trickle > 0:
			// Keep the connection barely alive: a byte now and then, never enough.
			tick := time.NewTicker(trickle)
			defer tick.Stop()
			one := make([]byte, 1)
		trickling:
			for {
				select {
				case <-upDone:
					break trickling
				case <-p.closed:
					break trickling
				case <-tick.C:
					if _, err := io.ReadFull(server, one); err != nil {
						break trickling
					}
					if _, err := client.Write(one); err != nil {
						break trickling
					}
				}
			}
		case stall:
			// Hold the connection open, silent, until the client or the test gives up.
			select {
			case <-upDone:
			case <-p.closed:
			}
		}
	}
	client.Close()
	<-upDone
}

// cutAfter cuts the first len(limits) connections after limits[i] bytes.
func cutAfter(limits ...int64) func(int) (int64, bool) {
	return func(i int) (int64, bool) {
		if i < len(limits) {
			return limits[i], false
		}
		return -1, false
	}
}
