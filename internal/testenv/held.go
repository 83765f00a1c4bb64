package testenv

import (
	"errors"
	"io"
	"sync"
)

// HeldBody passes the first after bytes of rc, then calls reached (once) and waits for release
// to close before it reads on: a request or answer body stopped half-way, for as long as a
// test needs. A done that closes first (the request's context; nil for none) ends the wait
// with an error instead.
func HeldBody(rc io.ReadCloser, after int64, release, done <-chan struct{}, reached func()) io.ReadCloser {
	return &heldBody{ReadCloser: rc, left: after, release: release, done: done, reached: reached}
}

type heldBody struct {
	io.ReadCloser
	left          int64
	release, done <-chan struct{}
	reached       func()
	once          sync.Once
}

func (b *heldBody) Read(p []byte) (int, error) {
	if b.left == 0 {
		b.once.Do(b.reached)
		select {
		case <-b.release:
		case <-b.done:
			return 0, errors.New("request cancelled while held")
		}
		return b.ReadCloser.Read(p)
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	return n, err
}
