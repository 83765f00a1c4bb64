package httpapi_test

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/azaion/loader/internal/httpapi"
	"github.com/azaion/loader/internal/resources"
	"github.com/azaion/loader/internal/testenv"
	"github.com/azaion/loader/internal/unlock"
)

type fakeAuth struct {
	mu       sync.Mutex
	err      error
	session  *httpapi.Session
	email    string
	password string
	panics   bool
}

func (a *fakeAuth) Login(_ context.Context, email, password string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.email, a.password = email, password
	return a.err
}

func (a *fakeAuth) Session() (httpapi.Session, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.panics {
		panic("boom")
	}
	if a.session == nil {
		return httpapi.Session{}, false
	}
	return *a.session, true
}

type fakeResources struct {
	open   func(ctx context.Context, folder, name string) (*resources.Resource, error)
	upload func(ctx context.Context, folder, name string, r io.Reader) error
	cache  func() (resources.CacheStatus, error)

	mu    sync.Mutex
	calls int
}

func (f *fakeResources) Open(ctx context.Context, folder, name string) (*resources.Resource, error) {
	f.mu.Lock()
	f.calls++
	f.mu.Unlock()
	if f.open == nil {
		panic("unexpected Open")
	}
	return f.open(ctx, folder, name)
}

func (f *fakeResources) Upload(ctx context.Context, folder, name string, r io.Reader) error {
	f.mu.Lock()
	f.calls++
	f.mu.Unlock()
	if f.upload == nil {
		panic("unexpected Upload")
	}
	return f.upload(ctx, folder, name, r)
}

func (f *fakeResources) CacheStatus() (resources.CacheStatus, error) {
	if f.cache == nil {
		return resources.CacheStatus{}, nil
	}
	return f.cache()
}

func (f *fakeResources) Calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

type fakeUnlock struct {
	mu     sync.Mutex
	state  unlock.State
	err    error
	status unlock.Status
	email  string
}

func (u *fakeUnlock) Start(_ context.Context, email, password string) (unlock.State, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.email = email
	return u.state, u.err
}

func (u *fakeUnlock) Status() unlock.Status {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.status
}

// closeRecorder is a Resource body that reports Close on a channel.
type closeRecorder struct {
	io.Reader
	once   sync.Once
	closed chan struct{}
}

func newCloseRecorder(r io.Reader) *closeRecorder {
	return &closeRecorder{Reader: r, closed: make(chan struct{})}
}

func (c *closeRecorder) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

type env struct {
	auth  *fakeAuth
	res   *fakeResources
	unl   *fakeUnlock
	logs  *testenv.SyncBuffer
	srv   *httpapi.Server
	ts    *httptest.Server
	token string
}

// newEnv starts a server on fakes; edit adjusts the Config before New.
func newEnv(t *testing.T, edit func(*httpapi.Config)) *env {
	t.Helper()
	return newEnvWith(t, edit, nil)
}

// newEnvWith is newEnv; server, when not nil, adjusts the test server before it starts.
func newEnvWith(t *testing.T, edit func(*httpapi.Config), server func(*httptest.Server)) *env {
	t.Helper()
	e := &env{
		auth: &fakeAuth{},
		res:  &fakeResources{},
		unl:  &fakeUnlock{state: unlock.StateAuthenticating},
		logs: &testenv.SyncBuffer{},
	}
	cfg := httpapi.Config{
		Auth:          e.auth,
		Resources:     e.res,
		Unlock:        e.unl,
		ModelCacheDir: "/var/cache/models",
		Logger:        slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if edit != nil {
		edit(&cfg)
	}
	e.token = cfg.APIToken
	e.srv = httpapi.New(cfg)
	e.ts = httptest.NewUnstartedServer(e.srv)
	if server != nil {
		server(e.ts)
	}
	e.ts.Start()
	t.Cleanup(e.ts.Close)
	return e
}
