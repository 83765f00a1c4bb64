package unlock_test

// No lock held across a call to Docker (SPEC §10), and the outcome of one run never lands on
// the next.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/azaion/loader/internal/config"
	"github.com/azaion/loader/internal/docker"
	"github.com/azaion/loader/internal/testenv"
	"github.com/azaion/loader/internal/unlock"
)

var errNotAnswering = fmt.Errorf("%w: docker daemon unix:///run/hung.sock not answering within 1s (inspect image x)", docker.ErrNotAnswering)

// While Docker does not answer, Start answers within AnswerWithin, a second Start and Status
// answer at once, and the run ends in the daemon's error once Docker gives up.
func TestUnlockHungDocker(t *testing.T) {
	s := newSetup(t, 10<<10)
	s.img.existsGate = make(chan struct{})
	s.img.existsErr = errNotAnswering
	u := unlock.New(unlock.Config{Images: config.DefaultImages, ArchivePath: s.path, AnswerWithin: 50 * time.Millisecond}, s.up, s.img)
	t.Cleanup(u.Close)

	st, err := u.Start(t.Context(), testEmail, testPassword)
	if err != nil || st != unlock.StateAuthenticating {
		t.Fatalf("first Start = %q, %v; want authenticating once Docker is slow to answer", st, err)
	}
	if got := u.Status(); got.State != unlock.StateAuthenticating {
		t.Errorf("status %+v, want the run shown as authenticating", got)
	}
	w := testenv.NewWatchedContext()
	if st, err := u.Start(w, testEmail, testPassword); err != nil || st != unlock.StateAuthenticating {
		t.Errorf("second Start = %q, %v; want the run's state", st, err)
	}
	if w.Waited() {
		t.Error("the second Start waited for something: it must answer the run's state at once")
	}

	close(s.img.existsGate) // Docker gives up
	u.Wait()
	got := u.Status()
	if got.State != unlock.StateError || !strings.Contains(got.Error, "unix:///run/hung.sock not answering within 1s") {
		t.Fatalf("status %+v, want error naming the daemon", got)
	}
	if strings.Contains(got.Error, "is dockerd running?") {
		t.Errorf("reason %q guesses the daemon is not running; it is running, and silent", got.Error)
	}
	if n := s.up.logins.Load(); n != 0 {
		t.Errorf("%d logins while Docker did not answer, want 0", n)
	}

	// A new POST after the error starts again.
	s.img.existsGate, s.img.existsErr = nil, nil
	if st := runToEnd(t, u); st.State != unlock.StateReady {
		t.Fatalf("run after Docker came back: %+v", st)
	}
}

// Docker answers late that everything is loaded: the run Start showed ends ready.
func TestUnlockSlowCheckFindsImagesLoaded(t *testing.T) {
	s := newSetup(t, 10<<10)
	s.img.present = map[string]bool{}
	for _, ref := range allRefs {
		s.img.present[ref] = true
	}
	s.img.existsGate = make(chan struct{})
	u := unlock.New(unlock.Config{Images: config.DefaultImages, ArchivePath: s.path, AnswerWithin: 20 * time.Millisecond}, s.up, s.img)
	t.Cleanup(u.Close)
	if st, err := u.Start(t.Context(), testEmail, testPassword); err != nil || st != unlock.StateAuthenticating {
		t.Fatalf("Start = %q, %v", st, err)
	}
	close(s.img.existsGate)
	u.Wait()
	if st := u.Status(); st.State != unlock.StateReady {
		t.Fatalf("status %+v, want ready", st)
	}
	if s.up.logins.Load() != 0 || s.img.loadCount() != 0 {
		t.Error("the run logged in or loaded although the images were there")
	}
}

// errGate is a context whose Err blocks, once armed, until released: it holds its caller at the
// point it asks whether it was cancelled.
type errGate struct {
	context.Context
	mu       sync.Mutex
	armed    bool
	blocked  chan struct{}
	released chan struct{}
}

func (g *errGate) arm() {
	g.mu.Lock()
	g.armed = true
	g.mu.Unlock()
}

func (g *errGate) Err() error {
	g.mu.Lock()
	hold := g.armed
	g.armed = false
	g.mu.Unlock()
	if hold {
		close(g.blocked)
		<-g.released
	}
	return g.Context.Err()
}

// A Run whose check fails records its error before any other run can begin: a Start that comes
// in meanwhile is not marked with the failed Run's error. (Issue 11: Run used to release its start
// lock before it recorded the outcome, and a Start that began between the two showed "error"
// while its own run was logging in.)
func TestUnlockRunOutcomeStaysWithItsRun(t *testing.T) {
	s := newSetup(t, 10<<10)
	g := &errGate{Context: t.Context(), blocked: make(chan struct{}), released: make(chan struct{})}
	s.img.failOnce = fmt.Errorf("%w at unix:///run/docker.sock: connection refused", docker.ErrUnreachable)
	s.img.onFail = g.arm // the Run's check failed: hold the Run the next time it looks at its ctx
	s.up.gate = make(chan struct{})
	u := s.unlocker(t)

	runErr := make(chan error, 1)
	go func() { runErr <- u.Run(g, testEmail, testPassword) }()
	select {
	case <-g.blocked: // the Run is held between its failed check and whatever follows
	case err := <-runErr:
		runErr <- err // it finished with its outcome recorded
	}
	st, err := u.Start(t.Context(), testEmail, testPassword)
	if err != nil || st != unlock.StateAuthenticating {
		t.Fatalf("Start after the failed Run = %q, %v; want a new run", st, err)
	}
	close(g.released)
	if err := <-runErr; !errors.Is(err, docker.ErrUnreachable) {
		t.Errorf("Run: %v, want its check's error", err)
	}
	if got := u.Status(); got.State != unlock.StateAuthenticating || got.Error != "" {
		t.Errorf("status %+v while the Start's run logs in, want authenticating: the Run's outcome landed on it", got)
	}
	close(s.up.gate)
	u.Wait()
	if got := u.Status(); got.State != unlock.StateReady {
		t.Errorf("the Start's run ended %+v, want ready", got)
	}
}

// Ensure joins a run under way instead of starting one, and reports its outcome.
func TestUnlockEnsure(t *testing.T) {
	s := newSetup(t, 10<<10)
	s.up.gate = make(chan struct{})
	u := s.unlocker(t)
	if _, err := u.Start(t.Context(), testEmail, testPassword); err != nil {
		t.Fatal(err)
	}
	changed := u.Changed()
	done := make(chan error, 1)
	go func() {
		joined, err := u.Ensure(t.Context())
		if !joined {
			err = errors.Join(err, errors.New("Ensure did not join the run under way"))
		}
		done <- err
	}()
	close(s.up.gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	<-changed // the run's end was announced
	if n := s.img.loadCount(); n != 1 {
		t.Errorf("%d loads, want 1", n)
	}
	if n := s.up.logins.Load(); n != 1 {
		t.Errorf("%d logins, want the Start's only", n)
	}

	// Everything loaded: Ensure starts a run that ends at once, without upstream.
	if joined, err := u.Ensure(t.Context()); err != nil || joined {
		t.Errorf("Ensure when ready = %v, %v", joined, err)
	}
	if n := s.up.logins.Load() + s.up.fragments.Load(); n != 2 {
		t.Errorf("upstream called again: %d logins and fragments", n)
	}

	// Its own run logs in with nothing: the session the Upstream holds is used.
	s2 := newSetup(t, 10<<10)
	u2 := s2.unlocker(t)
	if joined, err := u2.Ensure(t.Context()); err != nil || joined {
		t.Fatalf("Ensure = %v, %v", joined, err)
	}
	if s2.up.logins.Load() != 0 || s2.up.fragments.Load() != 1 || u2.Status().State != unlock.StateReady {
		t.Errorf("Ensure's run: %d logins, %d fragments, %+v; want 0, 1, ready", s2.up.logins.Load(), s2.up.fragments.Load(), u2.Status())
	}
}
