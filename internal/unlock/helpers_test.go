package unlock_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/azaion/loader/internal/testenv"
	"github.com/azaion/loader/internal/unlock"
)

const (
	testEmail    = "operator@example.com"
	testPassword = "s3cret-Passw0rd"
)

// encryptArchive writes IV ‖ AES-256-CBC(PKCS#7(plain)) with key SHA-256(fragment), made by the
// openssl command line tool, and returns its path.
func encryptArchive(t *testing.T, fragment, plain []byte) string {
	t.Helper()
	openssl := testenv.OpenSSL(t)
	dir := t.TempDir()
	in := filepath.Join(dir, "plain.tar")
	out := filepath.Join(dir, "cbc")
	if err := os.WriteFile(in, plain, 0o600); err != nil {
		t.Fatal(err)
	}
	key := sha256.Sum256(fragment)
	iv := make([]byte, 16)
	rand.Read(iv)
	cmd := exec.Command(openssl, "enc", "-aes-256-cbc", "-K", hex.EncodeToString(key[:]), "-iv", hex.EncodeToString(iv), "-in", in, "-out", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("openssl enc: %v\n%s", err, b)
	}
	ct, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(in)
	path := filepath.Join(dir, "images.enc")
	if err := os.WriteFile(path, append(iv, ct...), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// fakeUpstream counts calls; Login waits for gate when it is set.
type fakeUpstream struct {
	fragment []byte
	loginErr error
	gate     chan struct{}

	logins, fragments atomic.Int32
}

func (f *fakeUpstream) Login(ctx context.Context, email, password string) error {
	f.logins.Add(1)
	if email != testEmail || password != testPassword {
		return errors.New("fake upstream: bad credentials")
	}
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return f.loginErr
}

func (f *fakeUpstream) KeyFragment(ctx context.Context) ([]byte, error) {
	f.fragments.Add(1)
	return bytes.Clone(f.fragment), nil
}

// fakeImages is a Docker daemon that "loads" the refs in yields once it has read the archive to
// its end.
type fakeImages struct {
	yields    []string
	existsErr error
	loadErr   error

	// failOnce is the error of the first ImageExists call only; onFail is called once it has
	// been returned. When existsGate is set, ImageExists waits for it (or ctx) first.
	failOnce   error
	onFail     func()
	existsGate chan struct{}

	// When pauseAt > 0, LoadImages signals paused after reading pauseAt bytes and waits for
	// resume; when atEnd is set, it signals it after reading everything and waits for finish.
	pauseAt       int
	paused        chan struct{}
	resume        chan struct{}
	atEnd, finish chan struct{}

	mu      sync.Mutex
	present map[string]bool
	loads   int
	got     []byte
}

func (f *fakeImages) ImageExists(ctx context.Context, ref string) (bool, error) {
	if f.existsGate != nil {
		select {
		case <-f.existsGate:
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	if f.existsErr != nil {
		return false, f.existsErr
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failOnce; err != nil {
		f.failOnce = nil
		if f.onFail != nil {
			defer f.onFail()
		}
		return false, err
	}
	return f.present[ref], nil
}

func (f *fakeImages) LoadImages(ctx context.Context, r io.Reader) error {
	f.mu.Lock()
	f.loads++
	f.mu.Unlock()
	if f.loadErr != nil {
		return f.loadErr
	}
	var got []byte
	if f.pauseAt > 0 {
		head := make([]byte, f.pauseAt)
		if _, err := io.ReadFull(r, head); err != nil {
			return fmt.Errorf("fake docker: unexpected EOF (%v)", err)
		}
		got = head
		f.paused <- struct{}{}
		<-f.resume
	}
	rest, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("fake docker: unexpected EOF (%v)", err)
	}
	got = append(got, rest...)
	if f.atEnd != nil {
		f.atEnd <- struct{}{}
		<-f.finish
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got = got
	if f.present == nil {
		f.present = map[string]bool{}
	}
	for _, ref := range f.yields {
		f.present[ref] = true
	}
	return nil
}

func (f *fakeImages) loadCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.loads
}

func refs(repos []string, tag string) []string {
	out := make([]string, len(repos))
	for i, r := range repos {
		out[i] = r + ":" + tag
	}
	return out
}

// stateLog records the states the Unlocker logs, and everything it logs.
type stateLog struct {
	mu     sync.Mutex
	states []unlock.State
	all    bytes.Buffer
}

func (l *stateLog) logger() *slog.Logger {
	return slog.New(&stateHandler{l: l, text: slog.NewTextHandler(&lockedWriter{l: l}, nil)})
}

func (l *stateLog) snapshot() ([]unlock.State, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.states), l.all.String()
}

type lockedWriter struct{ l *stateLog }

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.l.mu.Lock()
	defer w.l.mu.Unlock()
	return w.l.all.Write(p)
}

type stateHandler struct {
	l    *stateLog
	text slog.Handler
}

func (h *stateHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *stateHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &stateHandler{l: h.l, text: h.text.WithAttrs(as)}
}
func (h *stateHandler) WithGroup(g string) slog.Handler {
	return &stateHandler{l: h.l, text: h.text.WithGroup(g)}
}
func (h *stateHandler) Handle(ctx context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "state" {
			h.l.mu.Lock()
			h.l.states = append(h.l.states, unlock.State(a.Value.String()))
			h.l.mu.Unlock()
		}
		return true
	})
	return h.text.Handle(ctx, r)
}

// waitState polls Status until it reports want.
func waitState(t *testing.T, u *unlock.Unlocker, want unlock.State) unlock.Status {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := u.Status()
		if st.State == want {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("state %q (error %q), want %q", st.State, st.Error, want)
		}
		time.Sleep(time.Millisecond)
	}
}
