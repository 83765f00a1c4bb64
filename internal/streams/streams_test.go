package streams_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"testing/iotest"

	"github.com/azaion/loader/internal/streams"
)

func TestErrRecorderKeepsTheFirstErrorButNotEOF(t *testing.T) {
	rec := streams.RecordErr(strings.NewReader("abc"))
	if b, err := io.ReadAll(rec); err != nil || string(b) != "abc" || rec.Err() != nil {
		t.Fatalf("clean read: %q %v, recorded %v", b, err, rec.Err())
	}

	first, second := errors.New("first"), errors.New("second")
	src := io.MultiReader(strings.NewReader("ab"), iotest.ErrReader(first))
	rec = streams.RecordErr(&switchErr{r: src, then: second})
	if _, err := io.Copy(io.Discard, rec); !errors.Is(err, first) {
		t.Fatalf("copy ended with %v, want the reader's error", err)
	}
	rec.Read(make([]byte, 1)) // the reader fails again, differently
	if !errors.Is(rec.Err(), first) {
		t.Fatalf("recorded %v, want the first error", rec.Err())
	}
}

// switchErr returns r's error once, then always then.
type switchErr struct {
	r    io.Reader
	then error
	seen bool
}

func (s *switchErr) Read(p []byte) (int, error) {
	if s.seen {
		return 0, s.then
	}
	n, err := s.r.Read(p)
	if err != nil {
		s.seen = true
	}
	return n, err
}

func TestDetachableCutsItsReaderOff(t *testing.T) {
	d := streams.NewDetachable(strings.NewReader("abcdef"))
	p := make([]byte, 3)
	if n, err := d.Read(p); n != 3 || err != nil || string(p) != "abc" {
		t.Fatalf("before Detach: %d %v %q", n, err, p)
	}
	d.Detach()
	if n, err := d.Read(p); n != 0 || !errors.Is(err, streams.ErrDetached) {
		t.Fatalf("after Detach: %d %v, want ErrDetached", n, err)
	}
}

func TestDetachWaitsForAReadInProgress(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	src := &blocking{entered: entered, release: release}
	d := streams.NewDetachable(src)
	go d.Read(make([]byte, 1))
	<-entered
	calling := make(chan struct{})
	returnedFirst := make(chan bool)
	go func() {
		close(calling)
		d.Detach()
		returnedFirst <- src.returned.Load()
	}()
	<-calling
	close(release) // a Detach that did not wait has returned by now, most likely
	if !<-returnedFirst {
		t.Fatal("Detach returned while a Read was in progress")
	}
	if n, err := d.Read(make([]byte, 1)); n != 0 || !errors.Is(err, streams.ErrDetached) || src.reads.Load() != 1 {
		t.Fatalf("after Detach: %d %v, %d reads reached the reader, want ErrDetached and 1", n, err, src.reads.Load())
	}
}

// blocking's first Read waits for release.
type blocking struct {
	entered, release chan struct{}
	reads            atomic.Int64
	returned         atomic.Bool
}

func (b *blocking) Read(p []byte) (int, error) {
	b.reads.Add(1)
	close(b.entered)
	<-b.release
	b.returned.Store(true)
	return 0, io.EOF
}

func TestOnReadSeesEveryByte(t *testing.T) {
	var calls, total int
	r := streams.OnRead(iotest.OneByteReader(bytes.NewReader(make([]byte, 1000))), func(n int) {
		if n <= 0 {
			t.Errorf("called with %d", n)
		}
		calls++
		total += n
	})
	if n, err := io.Copy(io.Discard, r); n != 1000 || err != nil {
		t.Fatalf("copy: %d %v", n, err)
	}
	if total != 1000 || calls != 1000 {
		t.Fatalf("%d bytes in %d calls, want 1000 in 1000", total, calls)
	}
}

func TestCountAddsToAShared(t *testing.T) {
	var n atomic.Int64
	n.Store(5)
	if _, err := io.Copy(io.Discard, streams.Count(strings.NewReader("hello"), &n)); err != nil {
		t.Fatal(err)
	}
	if n.Load() != 10 {
		t.Fatalf("count %d, want 5 + 5", n.Load())
	}
}

func TestAtEOFOnce(t *testing.T) {
	var n atomic.Int64
	calls := 0
	r := streams.AtEOF(streams.Count(strings.NewReader("abc"), &n), func() {
		calls++
		if n.Load() != 3 {
			t.Errorf("at EOF the count was %d, want 3", n.Load())
		}
	})
	io.ReadAll(r)
	r.Read(make([]byte, 1))
	if calls != 1 {
		t.Fatalf("f called %d times, want once", calls)
	}

	calls = 0
	streams.AtEOF(iotest.ErrReader(io.ErrUnexpectedEOF), func() { calls++ }).Read(make([]byte, 1))
	if calls != 0 {
		t.Fatal("f called for an error that is not io.EOF")
	}
}

func TestWithContextStopsOnceDone(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	r := streams.WithContext(ctx, strings.NewReader("abcdef"))
	p := make([]byte, 2)
	if n, err := r.Read(p); n != 2 || err != nil {
		t.Fatalf("before cancel: %d %v", n, err)
	}
	cancel()
	if n, err := r.Read(p); n != 0 || !errors.Is(err, context.Canceled) {
		t.Fatalf("after cancel: %d %v, want context.Canceled", n, err)
	}
}

// The pieces compose: the detach, the error record and the progress of an image load.
func TestComposed(t *testing.T) {
	boom := errors.New("disk read failed")
	progress := 0
	rec := streams.RecordErr(streams.OnRead(io.MultiReader(strings.NewReader("abcd"), iotest.ErrReader(boom)), func(int) { progress++ }))
	d := streams.NewDetachable(rec)
	_, err := io.Copy(io.Discard, d)
	d.Detach()
	if !errors.Is(err, boom) || !errors.Is(rec.Err(), boom) || progress == 0 {
		t.Fatalf("copy %v, recorded %v, progress %d", err, rec.Err(), progress)
	}
}

func TestReadCloserClosesWhatItWraps(t *testing.T) {
	var n atomic.Int64
	body := &closeCounter{Reader: strings.NewReader("body")}
	rc := streams.ReadCloser(streams.Count(body, &n), body)
	if b, err := io.ReadAll(rc); err != nil || string(b) != "body" || n.Load() != 4 {
		t.Fatalf("read %q %v, counted %d", b, err, n.Load())
	}
	if err := rc.Close(); err != nil || body.closed != 1 {
		t.Fatalf("close: %v, the body closed %d times, want once", err, body.closed)
	}
}

type closeCounter struct {
	io.Reader
	closed int
}

func (c *closeCounter) Close() error {
	c.closed++
	return nil
}
