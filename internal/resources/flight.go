package resources

import (
	"context"
	"io"
)

// flight is one CDN download of a big part, shared by every caller that needs the part while
// it runs. It belongs to the Service, not to the request that started it: Close cancels it.
// Its deadline is the CDN client's: an attempt that moves less than 1 KiB per stall timeout is
// abandoned, and a bounded number of them end the download.
type flight struct {
	done     chan struct{}
	err      error
	load     bool          // a /load waits on it; guarded by Service.fmu
	promoted chan struct{} // closed when load becomes true
}

// fetch waits for the download of n.k, starting one unless one is running. Before starting
// one it asks holds, with the caller's own idea of what it needs, whether the cache has it
// by now.
func (s *Service) fetch(n need, holds func() bool) error {
	fl, err := s.join(n, holds)
	if fl == nil || err != nil {
		return err
	}
	select {
	case <-n.ctx.Done():
		return n.ctx.Err()
	case <-fl.done:
		return fl.err
	}
}

// join returns the running download of n.k, or starts one; nil when holds says none is needed.
func (s *Service) join(n need, holds func() bool) (*flight, error) {
	s.fmu.Lock()
	fl, closed := s.flights[n.k], s.closed
	s.fmu.Unlock()
	if closed {
		return nil, errClosed
	}
	if fl == nil && holds() { // outside the lock: it reads the disk
		return nil, nil
	}
	s.fmu.Lock()
	defer s.fmu.Unlock()
	if s.closed {
		return nil, errClosed
	}
	if fl = s.flights[n.k]; fl == nil {
		fl = &flight{done: make(chan struct{}), promoted: make(chan struct{})}
		s.flights[n.k] = fl
		s.wg.Add(1)
		go s.fly(fl, n)
	}
	if n.load && !fl.load {
		fl.load = true
		close(fl.promoted)
		s.loads++
	}
	return fl, nil
}

// fly runs the download of fl under the service's context and tells the waiters.
func (s *Service) fly(fl *flight, n need) {
	defer s.wg.Done()
	n.ctx = s.ctx
	fl.err = s.download(s.ctx, fl, n)
	s.fmu.Lock()
	delete(s.flights, n.k)
	if fl.load {
		if s.loads--; s.loads == 0 {
			close(s.idle)
			s.idle = make(chan struct{})
		}
	}
	s.fmu.Unlock()
	close(fl.done)
}

// yield waits while a /load waits on another download than fl: prefetch gives its bandwidth
// to the loads (SPEC §11). A download a /load joined goes on at once.
func (s *Service) yield(ctx context.Context, fl *flight) error {
	for {
		s.fmu.Lock()
		if fl.load || s.loads == 0 {
			s.fmu.Unlock()
			return nil
		}
		idle, promoted := s.idle, fl.promoted
		s.fmu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-idle:
		case <-promoted:
		}
	}
}

// throttled is the writer a CDN download writes the cache through: it keeps all downloads
// together under CDN_RATE_LIMIT and makes prefetch wait for /load. The CDN client does not
// count the time spent in Write as a stalled connection.
type throttled struct {
	ctx context.Context
	s   *Service
	fl  *flight
	w   io.Writer
}

func (t *throttled) Write(b []byte) (int, error) {
	done := 0
	for len(b) > 0 {
		if err := t.s.yield(t.ctx, t.fl); err != nil {
			return done, err
		}
		chunk := b
		if t.s.limiter != nil {
			chunk = b[:min(len(b), t.s.limiter.Burst())]
			if err := t.s.limiter.WaitN(t.ctx, len(chunk)); err != nil {
				return done, err
			}
		}
		n, err := t.w.Write(chunk)
		done += n
		if err != nil {
			return done, err
		}
		b = b[n:]
	}
	return done, nil
}
