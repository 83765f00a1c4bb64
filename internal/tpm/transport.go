package tpm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// maxResponse bounds a TPM response (TPM_BUFSIZE of the Linux driver is 4096; simulators are alike).
const maxResponse = 64 << 10

// Response codes after which a command is simply sent again (TPM 2.0 Part 2, 6.6.3).
const (
	rcRetry   = 0x922
	rcYielded = 0x908
	rcTesting = 0x90A
)

// rawConn is one open connection to a TPM: a command goes in, its response comes out, and
// ctx bounds the whole exchange, whatever the other side does.
type rawConn interface {
	roundTrip(ctx context.Context, cmd []byte) ([]byte, error)
	// managed: the kernel's resource manager flushes what a connection leaves loaded in the
	// TPM when it closes. A simulator's socket has none.
	managed() bool
	Close() error
}

// dial opens a connection to device: "unix://PATH" for a simulator's socket (swtpm socket
// --server type=unixio), anything else is the path of a TPM character device (/dev/tpmrm0).
func dial(ctx context.Context, device string) (rawConn, error) {
	if path, ok := strings.CutPrefix(device, "unix://"); ok {
		var d net.Dialer
		for {
			c, err := d.DialContext(ctx, "unix", path)
			if err == nil {
				return &sockConn{c: c}, nil
			}
			// EAGAIN: the listen backlog is full because the simulator does not accept (it
			// is stopped): that is not answering, so wait for it within ctx.
			if !errors.Is(err, unix.EAGAIN) {
				return nil, err
			}
			t := time.NewTimer(50 * time.Millisecond)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			case <-t.C:
			}
		}
	}
	return openDevice(device)
}

// conn carries go-tpm's commands over a rawConn within one operation's context; it is the
// transport.TPM handed to go-tpm.
type conn struct {
	ctx context.Context
	raw rawConn
}

// Send sends one command and returns its response, sending it again while the TPM answers
// that it could not start it (TPM_RC_RETRY and the like), with a short growing pause.
func (c *conn) Send(cmd []byte) ([]byte, error) {
	pause := time.Millisecond
	for {
		rsp, err := c.raw.roundTrip(c.ctx, cmd)
		if err != nil {
			return nil, err
		}
		switch binary.BigEndian.Uint32(rsp[6:10]) {
		case rcRetry, rcYielded, rcTesting:
		default:
			return rsp, nil
		}
		t := time.NewTimer(pause)
		select {
		case <-c.ctx.Done():
			t.Stop()
			return nil, c.ctx.Err()
		case <-t.C:
		}
		pause = min(2*pause, 500*time.Millisecond)
	}
}

// responseSize is the size a response header declares, within bounds.
func responseSize(hdr []byte) (int, error) {
	size := int(binary.BigEndian.Uint32(hdr[2:6]))
	if size < 10 || size > maxResponse {
		return 0, fmt.Errorf("the TPM sent a response of impossible size %d", size)
	}
	return size, nil
}

// sockConn is a simulator's socket. A deadline on the socket and a cancel that moves it to the
// past make every read and write return when ctx ends, even when the simulator is stopped.
type sockConn struct{ c net.Conn }

func (s *sockConn) roundTrip(ctx context.Context, cmd []byte) ([]byte, error) {
	dl, _ := ctx.Deadline()
	if err := s.c.SetDeadline(dl); err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { s.c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	rsp, err := s.exchange(cmd)
	if err != nil {
		// The socket's deadline is ctx's: it may expire a moment before ctx says so.
		if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil {
			return nil, context.DeadlineExceeded
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	return rsp, err
}

func (s *sockConn) exchange(cmd []byte) ([]byte, error) {
	if _, err := s.c.Write(cmd); err != nil {
		return nil, err
	}
	hdr := make([]byte, 10, 4096)
	if _, err := io.ReadFull(s.c, hdr); err != nil {
		return nil, noEOF(err)
	}
	size, err := responseSize(hdr)
	if err != nil {
		return nil, err
	}
	rsp := append(hdr, make([]byte, size-10)...)
	if _, err := io.ReadFull(s.c, rsp[10:]); err != nil {
		return nil, noEOF(err)
	}
	return rsp, nil
}

func (s *sockConn) Close() error  { return s.c.Close() }
func (s *sockConn) managed() bool { return false }

func noEOF(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("the TPM closed the connection in the middle of a response")
	}
	return err
}

// devConn is a TPM character device. The Linux driver runs a command written to a
// non-blocking descriptor in the background and signals POLLIN when the response is ready, so
// the wait is a poll(2) bounded by ctx's deadline and woken by a pipe when ctx is cancelled: no
// goroutine waits on a TPM that does not answer.
type devConn struct {
	fd     int
	wakeR  int // poll wakes when ctx ends: AfterFunc writes to wakeW
	wakeW  int
	mu     sync.Mutex
	inCmd  bool // a command went unanswered: closing may wait for the TPM
	closed bool
}

func openDevice(path string) (*devConn, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &pathError{path, err}
	}
	return newDevConn(fd)
}

// newDevConn takes over fd, a descriptor that behaves as a TPM device: a command is written
// whole, the response is read whole once the descriptor polls readable.
func newDevConn(fd int) (*devConn, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &devConn{fd: fd, wakeR: p[0], wakeW: p[1]}, nil
}

type pathError struct {
	path string
	err  error
}

func (e *pathError) Error() string { return e.path + ": " + e.err.Error() }
func (e *pathError) Unwrap() error { return e.err }

func (d *devConn) roundTrip(ctx context.Context, cmd []byte) ([]byte, error) {
	stop := context.AfterFunc(ctx, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if !d.closed {
			unix.Write(d.wakeW, []byte{1})
		}
	})
	defer stop()
	d.mu.Lock()
	d.inCmd = true
	d.mu.Unlock()
	if err := retryEINTR(func() error {
		n, err := unix.Write(d.fd, cmd)
		if err == nil && n != len(cmd) {
			err = fmt.Errorf("short write to the TPM (%d of %d bytes)", n, len(cmd))
		}
		return err
	}); err != nil {
		return nil, err
	}
	if err := d.wait(ctx); err != nil {
		return nil, err
	}
	rsp := make([]byte, maxResponse)
	var n int
	if err := retryEINTR(func() (err error) { n, err = unix.Read(d.fd, rsp); return }); err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.inCmd = false
	d.mu.Unlock()
	if n < 10 {
		return nil, fmt.Errorf("the TPM sent a %d-byte response", n)
	}
	size, err := responseSize(rsp[:10])
	if err != nil {
		return nil, err
	}
	if size != n {
		return nil, fmt.Errorf("the TPM sent %d bytes of a %d-byte response", n, size)
	}
	return rsp[:n], nil
}

func (d *devConn) managed() bool { return true }

// wait polls until the device is readable or ctx ends.
func (d *devConn) wait(ctx context.Context) error {
	for {
		timeout := -1
		if dl, ok := ctx.Deadline(); ok {
			timeout = int(time.Until(dl).Milliseconds()) + 1
			if timeout <= 0 {
				return context.DeadlineExceeded
			}
		}
		fds := []unix.PollFd{{Fd: int32(d.fd), Events: unix.POLLIN}, {Fd: int32(d.wakeR), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, timeout)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return fmt.Errorf("poll the TPM: %w", err)
		case ctx.Err() != nil:
			return ctx.Err()
		case n > 0 && fds[0].Revents != 0:
			return nil // readable, or an error the read reports
		}
	}
}

// Close closes the device. When a command went unanswered, the driver's release waits for the
// TPM to finish it (or for the driver's own timeout): that wait happens in a goroutine that ends
// with it, so the caller is never held by a hung TPM.
func (d *devConn) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	unix.Close(d.wakeR)
	unix.Close(d.wakeW)
	if d.inCmd {
		go unix.Close(d.fd)
		return nil
	}
	return unix.Close(d.fd)
}

func retryEINTR(f func() error) error {
	for {
		if err := f(); err != unix.EINTR {
			return err
		}
	}
}
