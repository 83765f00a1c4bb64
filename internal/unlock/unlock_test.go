package unlock_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/azaion/loader/internal/config"
	"github.com/azaion/loader/internal/docker"
	"github.com/azaion/loader/internal/security"
	"github.com/azaion/loader/internal/unlock"
)

var allRefs = refs(config.DefaultImages, "latest")

// setup is an archive of plain encrypted under fragment, an upstream that hands out fragment and
// a Docker that yields every default image.
type setup struct {
	fragment []byte
	plain    []byte
	path     string
	up       *fakeUpstream
	img      *fakeImages
	log      *stateLog
}

func newSetup(t *testing.T, plainSize int) *setup {
	s := &setup{fragment: randomBytes(32), plain: randomBytes(plainSize), log: &stateLog{}}
	s.path = encryptArchive(t, s.fragment, s.plain)
	s.up = &fakeUpstream{fragment: s.fragment}
	s.img = &fakeImages{yields: allRefs}
	return s
}

func (s *setup) unlocker(t *testing.T) *unlock.Unlocker {
	u := unlock.New(unlock.Config{Images: config.DefaultImages, ArchivePath: s.path, Logger: s.log.logger()}, s.up, s.img)
	t.Cleanup(u.Close)
	return u
}

// runToEnd starts a workflow, waits for it and returns its final status.
func runToEnd(t *testing.T, u *unlock.Unlocker) unlock.Status {
	t.Helper()
	st, err := u.Start(t.Context(), testEmail, testPassword)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	if st != unlock.StateAuthenticating {
		t.Fatalf("Start answered %q, want %q", st, unlock.StateAuthenticating)
	}
	u.Wait()
	return u.Status()
}

func TestUnlockStateSequence(t *testing.T) {
	s := newSetup(t, 300<<10)
	u := s.unlocker(t)
	if got := u.Status().State; got != unlock.StateIdle {
		t.Fatalf("new Unlocker in state %q", got)
	}
	st := runToEnd(t, u)
	if st.State != unlock.StateReady || st.Error != "" {
		t.Fatalf("status %+v, want ready", st)
	}
	if !bytes.Equal(s.img.got, s.plain) {
		t.Errorf("Docker received %d bytes that are not the plaintext (%d bytes)", len(s.img.got), len(s.plain))
	}
	states, logged := s.log.snapshot()
	want := []unlock.State{unlock.StateAuthenticating, unlock.StateDownloadingKey, unlock.StateDecrypting, unlock.StateLoadingImages, unlock.StateReady}
	if !slices.Equal(states, want) {
		t.Errorf("states %v, want %v", states, want)
	}
	for _, secret := range []string{testPassword, testEmail, fmt.Sprintf("%x", s.fragment)} {
		if strings.Contains(logged, secret) {
			t.Errorf("log contains a secret %q:\n%s", secret, logged)
		}
	}
}

func TestUnlockProgress(t *testing.T) {
	s := newSetup(t, 1<<20)
	s.img.pauseAt = 256 << 10
	s.img.paused, s.img.resume = make(chan struct{}), make(chan struct{})
	s.img.atEnd, s.img.finish = make(chan struct{}), make(chan struct{})
	u := s.unlocker(t)
	fi, err := os.Stat(s.path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Start(t.Context(), testEmail, testPassword); err != nil {
		t.Fatal(err)
	}

	<-s.img.paused
	st := u.Status()
	if st.State != unlock.StateDecrypting || st.BytesTotal != fi.Size() || st.BytesDone <= 0 || st.BytesDone >= st.BytesTotal {
		t.Errorf("mid-stream status %+v, want decrypting with 0 < bytesDone < bytesTotal = %d", st, fi.Size())
	}
	close(s.img.resume)

	<-s.img.atEnd
	st = u.Status()
	if st.State != unlock.StateLoadingImages || st.BytesDone != st.BytesTotal {
		t.Errorf("status once the archive is handed over %+v, want loading_images with bytesDone = bytesTotal", st)
	}
	close(s.img.finish)

	u.Wait()
	st = u.Status()
	if st.State != unlock.StateReady || st.BytesDone != fi.Size() || st.BytesTotal != fi.Size() {
		t.Errorf("final status %+v, want ready with bytesDone = bytesTotal = %d", st, fi.Size())
	}
}

func TestUnlockConcurrentStartsMakeOneRun(t *testing.T) {
	s := newSetup(t, 10<<10)
	s.up.gate = make(chan struct{})
	u := s.unlocker(t)

	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			st, err := u.Start(t.Context(), testEmail, testPassword)
			if err != nil || st != unlock.StateAuthenticating {
				t.Errorf("Start = %q, %v; want authenticating", st, err)
			}
		})
	}
	wg.Wait()
	close(s.up.gate)
	u.Wait()

	if st := u.Status(); st.State != unlock.StateReady {
		t.Fatalf("status %+v, want ready", st)
	}
	if n := s.up.fragments.Load(); n != 1 {
		t.Errorf("%d key fragment downloads, want 1", n)
	}
	if n := s.img.loadCount(); n != 1 {
		t.Errorf("%d image loads, want 1", n)
	}
	// Once ready, another Start answers ready without a run.
	if st, err := u.Start(t.Context(), testEmail, testPassword); err != nil || st != unlock.StateReady {
		t.Errorf("Start after ready = %q, %v", st, err)
	}
	if n := s.up.logins.Load(); n != 1 {
		t.Errorf("%d logins, want 1", n)
	}
}

func TestUnlockAlreadyLoaded(t *testing.T) {
	up := &fakeUpstream{}
	img := &fakeImages{present: map[string]bool{}}
	for _, ref := range allRefs {
		img.present[ref] = true
	}
	u := unlock.New(unlock.Config{Images: config.DefaultImages, ArchivePath: filepath.Join(t.TempDir(), "absent.enc")}, up, img)
	defer u.Close()

	st, err := u.Start(t.Context(), testEmail, testPassword)
	if err != nil || st != unlock.StateReady {
		t.Fatalf("Start = %q, %v; want ready", st, err)
	}
	if got := u.Status().State; got != unlock.StateReady {
		t.Errorf("status %q, want ready", got)
	}
	if err := u.Run(t.Context(), testEmail, testPassword); err != nil {
		t.Errorf("Run: %v", err)
	}
	if up.logins.Load() != 0 || up.fragments.Load() != 0 || img.loadCount() != 0 {
		t.Errorf("upstream or Docker called: %d logins, %d fragments, %d loads", up.logins.Load(), up.fragments.Load(), img.loadCount())
	}
}

func TestUnlockArchiveMissing(t *testing.T) {
	up := &fakeUpstream{}
	img := &fakeImages{present: map[string]bool{allRefs[0]: true}}
	u := unlock.New(unlock.Config{Images: config.DefaultImages, ArchivePath: filepath.Join(t.TempDir(), "absent.enc")}, up, img)
	defer u.Close()

	if _, err := u.Start(t.Context(), testEmail, testPassword); !errors.Is(err, unlock.ErrArchiveNotFound) {
		t.Fatalf("Start: %v, want ErrArchiveNotFound", err)
	}
	if err := u.Run(t.Context(), testEmail, testPassword); !errors.Is(err, unlock.ErrArchiveNotFound) {
		t.Fatalf("Run: %v, want ErrArchiveNotFound", err)
	}
	if got := u.Status().State; got != unlock.StateIdle {
		t.Errorf("state %q, want idle", got)
	}
	if up.logins.Load() != 0 {
		t.Errorf("upstream called")
	}
}

func TestUnlockWrongKey(t *testing.T) {
	s := newSetup(t, 100<<10)
	s.up.fragment = randomBytes(32)
	st := runToEnd(t, s.unlocker(t))
	if st.State != unlock.StateError || !strings.Contains(st.Error, "wrong key") {
		t.Fatalf("status %+v, want error naming a wrong key", st)
	}
	if n := s.img.loadCount(); n != 0 {
		t.Errorf("LoadImages called %d times with a wrong key", n)
	}
}

func TestUnlockTruncatedArchive(t *testing.T) {
	for _, cut := range []int{5, 16} {
		t.Run(fmt.Sprintf("cut%d", cut), func(t *testing.T) {
			s := newSetup(t, 100<<10)
			ct, err := os.ReadFile(s.path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(s.path, ct[:len(ct)-cut], 0o600); err != nil {
				t.Fatal(err)
			}
			st := runToEnd(t, s.unlocker(t))
			if st.State != unlock.StateError {
				t.Fatalf("status %+v, want error", st)
			}
			if cut%16 != 0 && !strings.Contains(st.Error, "truncated") {
				t.Errorf("error %q does not say the archive is truncated", st.Error)
			}
			if cut%16 == 0 && !strings.Contains(st.Error, "corrupted archive") {
				t.Errorf("error %q does not say the archive may be corrupted", st.Error)
			}
			if n := s.img.loadCount(); n != 0 {
				t.Errorf("LoadImages called %d times", n)
			}
		})
	}
}

// cutDecrypter hands out limit plaintext bytes, then fails as a truncated ciphertext does.
func cutDecrypter(limit int64) func(io.Reader, []byte) io.Reader {
	return func(r io.Reader, key []byte) io.Reader {
		return io.MultiReader(io.LimitReader(security.NewDecrypter(r, key), limit), errorReader{fmt.Errorf("security: %w", security.ErrTruncated)})
	}
}

type errorReader struct{ err error }

func (e errorReader) Read([]byte) (int, error) { return 0, e.err }

func TestUnlockStreamFailureIsTheReason(t *testing.T) {
	s := newSetup(t, 300<<10)
	u := s.unlocker(t)
	unlock.SetDecrypter(u, cutDecrypter(100<<10))
	st := runToEnd(t, u)
	if st.State != unlock.StateError || !strings.Contains(st.Error, "truncated") || strings.Contains(st.Error, "fake docker") {
		t.Fatalf("status %+v, want the decrypter's error, not Docker's", st)
	}
	for _, ref := range allRefs {
		if ok, _ := s.img.ImageExists(t.Context(), ref); ok {
			t.Errorf("%s loaded from a cut stream", ref)
		}
	}
}

func TestUnlockImageMissingAfterLoad(t *testing.T) {
	s := newSetup(t, 10<<10)
	s.img.yields = slices.DeleteFunc(slices.Clone(allRefs), func(r string) bool { return r == "azaion/flights:latest" })
	st := runToEnd(t, s.unlocker(t))
	if st.State != unlock.StateError || st.Error != "image azaion/flights:latest missing after load" {
		t.Fatalf("status %+v, want error naming azaion/flights:latest", st)
	}
}

func TestUnlockDockerUnreachable(t *testing.T) {
	unreachable := fmt.Errorf("%w at unix:///nowhere/docker.sock: connect: no such file or directory", docker.ErrUnreachable)

	t.Run("check", func(t *testing.T) {
		s := newSetup(t, 10<<10)
		s.img.existsErr = unreachable
		u := s.unlocker(t)
		st, err := u.Start(t.Context(), testEmail, testPassword)
		if err != nil || st != unlock.StateError {
			t.Fatalf("Start = %q, %v; want error state", st, err)
		}
		if got := u.Status().Error; !strings.Contains(got, "docker daemon unreachable at unix:///nowhere/docker.sock") || !strings.Contains(got, "is dockerd running?") {
			t.Errorf("reason %q", got)
		}
		if err := u.Run(t.Context(), testEmail, testPassword); !errors.Is(err, docker.ErrUnreachable) {
			t.Errorf("Run: %v, want ErrUnreachable", err)
		}
		if s.up.logins.Load() != 0 {
			t.Errorf("logged in although Docker is unreachable")
		}
	})
	t.Run("load", func(t *testing.T) {
		s := newSetup(t, 10<<10)
		s.img.loadErr = unreachable
		st := runToEnd(t, s.unlocker(t))
		if st.State != unlock.StateError || !strings.Contains(st.Error, "is dockerd running?") {
			t.Fatalf("status %+v", st)
		}
	})
}

func TestUnlockCloseInterrupts(t *testing.T) {
	s := newSetup(t, 10<<10)
	s.up.gate = make(chan struct{}) // never opened: the run waits in Login
	u := unlock.New(unlock.Config{Images: config.DefaultImages, ArchivePath: s.path}, s.up, s.img)
	if _, err := u.Start(t.Context(), testEmail, testPassword); err != nil {
		t.Fatal(err)
	}
	u.Close()
	if st := u.Status(); st.State != unlock.StateError || st.Error != "interrupted" {
		t.Fatalf("status after Close %+v, want error \"interrupted\"", st)
	}
	if _, err := u.Start(t.Context(), testEmail, testPassword); !errors.Is(err, unlock.ErrClosed) {
		t.Errorf("Start after Close: %v, want ErrClosed", err)
	}
}

func TestUnlockRunInterruptedByContext(t *testing.T) {
	s := newSetup(t, 10<<10)
	s.up.gate = make(chan struct{})
	u := s.unlocker(t)
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error)
	go func() { errc <- u.Run(ctx, testEmail, testPassword) }()
	waitState(t, u, unlock.StateAuthenticating)
	cancel()
	if err := <-errc; !errors.Is(err, unlock.ErrInterrupted) {
		t.Fatalf("Run: %v, want ErrInterrupted", err)
	}
}

func TestUnlockRunAfterStartIsRefused(t *testing.T) {
	s := newSetup(t, 10<<10)
	s.up.gate = make(chan struct{})
	u := s.unlocker(t)
	if _, err := u.Start(t.Context(), testEmail, testPassword); err != nil {
		t.Fatal(err)
	}
	if err := u.Run(t.Context(), testEmail, testPassword); !errors.Is(err, unlock.ErrRunning) {
		t.Errorf("Run during a run: %v, want ErrRunning", err)
	}
	close(s.up.gate)
	u.Wait()
}

func TestUnlockRestartAfterError(t *testing.T) {
	s := newSetup(t, 10<<10)
	s.up.loginErr = errors.New("upstream unavailable")
	u := s.unlocker(t)
	if st := runToEnd(t, u); st.State != unlock.StateError || !strings.Contains(st.Error, "upstream unavailable") {
		t.Fatalf("first run %+v, want error", st)
	}
	s.up.loginErr = nil
	if st := runToEnd(t, u); st.State != unlock.StateReady || st.Error != "" {
		t.Fatalf("second run %+v, want ready", st)
	}
}

func TestUnlockRunSynchronous(t *testing.T) {
	s := newSetup(t, 10<<10)
	u := s.unlocker(t)
	if err := u.Run(t.Context(), testEmail, testPassword); err != nil {
		t.Fatal(err)
	}
	if got := u.Status().State; got != unlock.StateReady {
		t.Errorf("state %q after Run", got)
	}

	s2 := newSetup(t, 10<<10)
	s2.up.fragment = randomBytes(16)
	err := s2.unlocker(t).Run(t.Context(), testEmail, testPassword)
	if !errors.Is(err, security.ErrWrongKey) || !strings.Contains(err.Error(), "wrong key") {
		t.Errorf("Run with a wrong fragment: %v", err)
	}
}

func TestUnlockRunOutlivesStartContext(t *testing.T) {
	s := newSetup(t, 10<<10)
	s.up.gate = make(chan struct{})
	u := s.unlocker(t)
	ctx, cancel := context.WithCancel(t.Context())
	if _, err := u.Start(ctx, testEmail, testPassword); err != nil {
		t.Fatal(err)
	}
	cancel() // the HTTP request ends; the run goes on
	close(s.up.gate)
	u.Wait()
	if st := u.Status(); st.State != unlock.StateReady {
		t.Fatalf("status %+v, want ready", st)
	}
}
