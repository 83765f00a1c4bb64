package resourceapi_test

import (
	"bytes"
	"context"
	"errors"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/azaion/loader/internal/refapi"
	"github.com/azaion/loader/internal/resourceapi"
)

// Integration tests against the reference Resource API over real HTTP. The reference server
// is written from the SPEC with its own cryptography, so agreement here means both sides read
// the contract the same way.

const (
	refEmail    = "operator@azaion.test"
	refPassword = "op-Pa55+word"
	refHardware = "CPU: ARMv8 Processor rev 1 (v8l). GPU: NVIDIA Tegra Orin. Memory: 7620000. DriveSerial: 0123ABC"
)

var refCDN = refapi.CDNSettings{
	Host:                   "127.0.0.1:9000",
	DownloaderAccessKey:    "downloader",
	DownloaderAccessSecret: "downloader-secret",
	UploaderAccessKey:      "uploader",
	UploaderAccessSecret:   "uploader-secret",
}

type refEnv struct {
	ref    *refapi.Server
	url    string
	client *resourceapi.Client
}

func newRefEnv(t *testing.T, edit func(*refapi.Config), opts resourceapi.Options) *refEnv {
	t.Helper()
	cfg := refapi.Config{
		Users: []refapi.User{
			{ID: "u-1", Email: refEmail, Password: refPassword, Role: "Operator"},
			{ID: "u-2", Email: "uploader@azaion.test", Password: "up-secret", Role: "ResourceUploader"},
		},
		DataDir:     t.TempDir(),
		JWTSecret:   []byte("reference-secret"),
		KeyFragment: []byte("\x00\x01fragment\xff"),
		CDN:         refCDN,
	}
	if edit != nil {
		edit(&cfg)
	}
	ref, err := refapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(ref)
	t.Cleanup(srv.Close)
	c, err := resourceapi.New(srv.URL, refHardware, opts)
	if err != nil {
		t.Fatal(err)
	}
	return &refEnv{ref: ref, url: srv.URL, client: c}
}

func (e *refEnv) login(t *testing.T) {
	t.Helper()
	if err := e.client.Login(context.Background(), refEmail, refPassword); err != nil {
		t.Fatalf("Login: %v", err)
	}
}

func TestRefLoginAndCDN(t *testing.T) {
	e := newRefEnv(t, nil, resourceapi.Options{})
	e.login(t)
	user, ok := e.client.Session()
	if want := (resourceapi.User{ID: "u-1", Email: refEmail, Role: resourceapi.Operator}); !ok || user != want {
		t.Fatalf("Session = %+v, %v; want %+v", user, ok, want)
	}
	cdn, err := e.client.CDN()
	if err != nil {
		t.Fatal(err)
	}
	if cdn != resourceapi.CDNSettings(refCDN) {
		t.Fatalf("CDN = %+v, want %+v", cdn, refCDN)
	}
}

func TestRefLoginFailures(t *testing.T) {
	e := newRefEnv(t, nil, resourceapi.Options{})
	ctx := context.Background()
	if err := e.client.Login(ctx, refEmail, "wrong"); !errors.Is(err, resourceapi.ErrUnauthorized) {
		t.Fatalf("wrong password: %v", err)
	}
	if err := e.client.Login(ctx, "nobody@azaion.test", refPassword); !errors.Is(err, resourceapi.ErrUnauthorized) {
		t.Fatalf("unknown user: %v", err)
	}
	e.ref.SetFault(refapi.EndpointLogin, 503, 1)
	if err := e.client.Login(ctx, refEmail, refPassword); !errors.Is(err, resourceapi.ErrUnavailable) {
		t.Fatalf("503: %v", err)
	}
	if _, ok := e.client.Session(); ok {
		t.Error("failed logins left a session")
	}
	const typo = "op-Pa55+wordd"
	if err := e.client.Login(ctx, refEmail, typo); strings.Contains(err.Error(), typo) {
		t.Errorf("error %q leaks the password", err)
	}
}

func TestRefGetResource(t *testing.T) {
	e := newRefEnv(t, nil, resourceapi.Options{})
	e.login(t)
	want := bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef, 0}, 1000)
	if err := e.ref.PutResource("models", "a.small", bytes.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	got, err := e.client.GetResource(context.Background(), "models", "a.small")
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("GetResource = %d bytes, %v; want %d bytes", len(got), err, len(want))
	}
	if _, err := e.client.GetResource(context.Background(), "models", "missing"); !errors.Is(err, resourceapi.ErrNotFound) {
		t.Fatalf("missing: %v", err)
	}
}

func TestRefUploadListGet(t *testing.T) {
	e := newRefEnv(t, nil, resourceapi.Options{})
	e.login(t)
	ctx := context.Background()
	data := []byte("small part of a model")
	for _, name := range []string{"b.small", "a.small"} {
		if err := e.client.UploadResource(ctx, "models", name, bytes.NewReader(data)); err != nil {
			t.Fatalf("upload %s: %v", name, err)
		}
	}
	names, err := e.client.ListResources(ctx, "models")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	if want := []string{"a.small", "b.small"}; !slices.Equal(names, want) {
		t.Fatalf("ListResources = %v, want %v", names, want)
	}
	got, err := e.client.GetResource(ctx, "models", "a.small")
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("GetResource after upload = %q, %v", got, err)
	}
}

func TestRefKeyFragment(t *testing.T) {
	e := newRefEnv(t, nil, resourceapi.Options{})
	e.login(t)
	got, err := e.client.KeyFragment(context.Background())
	if err != nil || !bytes.Equal(got, []byte("\x00\x01fragment\xff")) {
		t.Fatalf("KeyFragment = %q, %v", got, err)
	}
}

func TestRefRevokedTokens(t *testing.T) {
	e := newRefEnv(t, nil, resourceapi.Options{})
	e.login(t)
	e.ref.RevokeTokens()
	if _, err := e.client.KeyFragment(context.Background()); err != nil {
		t.Fatalf("KeyFragment after RevokeTokens: %v", err)
	}
	if n := e.ref.Calls(refapi.EndpointLogin); n != 2 {
		t.Errorf("%d logins, want 2", n)
	}
	if n := e.ref.Calls(refapi.EndpointKeyFragment); n != 2 {
		t.Errorf("%d key fragment calls, want 2", n)
	}

	// Many callers at once still share one re-login.
	e.ref.RevokeTokens()
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, err := e.client.ListResources(context.Background(), "models"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := e.ref.Calls(refapi.EndpointLogin); n != 3 {
		t.Errorf("%d logins, want 3", n)
	}
}

func TestRefRefusals(t *testing.T) {
	e := newRefEnv(t, nil, resourceapi.Options{})
	e.login(t)
	ctx := context.Background()
	e.ref.SetFault(refapi.EndpointList, 401, 2)
	if _, err := e.client.ListResources(ctx, "models"); !errors.Is(err, resourceapi.ErrUnauthorized) {
		t.Fatalf("401 twice: %v", err)
	}
	// The device is bound to other hardware: the API refuses, and a new login does not help.
	e.ref.SetHardware(refEmail, "another device")
	if _, err := e.client.GetResource(ctx, "", "cdn.yaml"); !errors.Is(err, resourceapi.ErrForbidden) {
		t.Fatalf("other hardware: %v", err)
	} else if strings.Contains(err.Error(), refHardware) || strings.Contains(err.Error(), refPassword) {
		t.Errorf("error %q leaks a secret", err)
	}
	if n := e.ref.Calls(refapi.EndpointLogin); n != 3 {
		t.Errorf("%d logins, want 3 (one re-login per refused call)", n)
	}
}

func TestRefVerifiedToken(t *testing.T) {
	e := newRefEnv(t, nil, resourceapi.Options{VerifyKey: []byte("reference-secret")})
	e.login(t)
	bad := newRefEnv(t, nil, resourceapi.Options{VerifyKey: []byte("not the secret")})
	if err := bad.client.Login(context.Background(), refEmail, refPassword); !errors.Is(err, resourceapi.ErrUnavailable) {
		t.Fatalf("wrong verify key: %v", err)
	}
}

// With a token lifetime of two seconds the client renews after one, before the API refuses.
func TestRefRenewsBeforeExpiry(t *testing.T) {
	e := newRefEnv(t, func(c *refapi.Config) { c.TokenLifetime = 2 * time.Second }, resourceapi.Options{})
	e.login(t)
	time.Sleep(1100 * time.Millisecond)
	if _, err := e.client.ListResources(context.Background(), "models"); err != nil {
		t.Fatal(err)
	}
	if n := e.ref.Calls(refapi.EndpointLogin); n != 2 {
		t.Errorf("%d logins, want 2", n)
	}
	if n := e.ref.Calls(refapi.EndpointList); n != 1 {
		t.Errorf("%d list calls, want 1: renewed ahead, not after a 401", n)
	}
}

// TestRefOnLoginAndList: OnLogin is called after each successful Login, not after a failed
// one nor after the client's own re-login; ListResources names the small parts a folder holds
// (SPEC §3), as prefetch reads them.
func TestRefOnLoginAndList(t *testing.T) {
	var mu sync.Mutex
	logins := 0
	e := newRefEnv(t, nil, resourceapi.Options{OnLogin: func() { mu.Lock(); logins++; mu.Unlock() }})
	count := func() int { mu.Lock(); defer mu.Unlock(); return logins }
	if err := e.client.Login(context.Background(), refEmail, "wrong"); err == nil {
		t.Fatal("a wrong password logged in")
	}
	if n := count(); n != 0 {
		t.Fatalf("OnLogin after a failed login: %d calls", n)
	}
	e.login(t)
	for _, n := range []string{"b.bin.small", "a.bin.small"} {
		if err := e.ref.PutResource("models", n, strings.NewReader("x")); err != nil {
			t.Fatal(err)
		}
	}
	e.ref.RevokeTokens() // the next call logs in again by itself
	names, err := e.client.ListResources(context.Background(), "models")
	if err != nil || !slices.Equal(names, []string{"a.bin.small", "b.bin.small"}) {
		t.Fatalf("ListResources = %q, %v", names, err)
	}
	if n := count(); n != 1 {
		t.Errorf("OnLogin called %d times, want once (the re-login does not count)", n)
	}
	e.login(t)
	if n := count(); n != 2 {
		t.Errorf("OnLogin called %d times after a second login, want 2", n)
	}
}
