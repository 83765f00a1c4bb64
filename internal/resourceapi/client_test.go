package resourceapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/azaion/loader/internal/refapi"
	"github.com/azaion/loader/internal/security"
)

func putResource(t *testing.T, e *env, folder, name, content string) {
	t.Helper()
	if err := e.ref.PutResource(folder, name, strings.NewReader(content)); err != nil {
		t.Fatal(err)
	}
}

func TestNotLoggedIn(t *testing.T) {
	e := newEnv(t, Options{}, nil)
	ctx := context.Background()
	_, err1 := e.client.GetResource(ctx, "models", "a")
	_, err2 := e.client.ListResources(ctx, "models")
	_, err3 := e.client.KeyFragment(ctx)
	err4 := e.client.UploadResource(ctx, "models", "a", strings.NewReader("x"))
	for i, err := range []error{err1, err2, err3, err4} {
		if !errors.Is(err, ErrNotLoggedIn) {
			t.Errorf("call %d: err = %v, want ErrNotLoggedIn", i+1, err)
		}
	}
	for _, ep := range []string{refapi.EndpointLogin, refapi.EndpointGet, refapi.EndpointList, refapi.EndpointKeyFragment, refapi.EndpointUpload} {
		if n := e.calls(ep); n != 0 {
			t.Errorf("%d calls reached %s", n, ep)
		}
	}
}

func TestGetResource(t *testing.T) {
	e := newEnv(t, Options{}, nil)
	e.login(t)
	want := bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef, 0}, 1000)
	putResource(t, e, "models", "a.small", string(want))
	got, err := e.client.GetResource(context.Background(), "models", "a.small")
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("GetResource = %d bytes, %v", len(got), err)
	}
	// The empty folder is the API's top level: POST /resources/get.
	putResource(t, e, "", "top.txt", "top")
	if got, err := e.client.GetResource(context.Background(), "", "top.txt"); err != nil || string(got) != "top" {
		t.Fatalf("GetResource top level = %q, %v", got, err)
	}
	if _, err := e.client.GetResource(context.Background(), "models", "missing"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing: err = %v, want ErrNotFound", err)
	} else if !strings.HasPrefix(err.Error(), "get models/missing: ") {
		t.Errorf("err = %q, want the call named", err)
	}
	if n := e.calls(refapi.EndpointLogin); n != 1 {
		t.Errorf("%d logins, want 1 (404 needs no re-login)", n)
	}
}

func TestGetResourceWrongKey(t *testing.T) {
	e := newEnv(t, Options{}, nil)
	e.login(t)
	// Decryption fails when the server encrypts with another key: swap the client's key.
	e.client.mu.Lock()
	s := *e.client.sess
	s.apiKey = security.KeyFromString("another key")
	e.client.sess = &s
	e.client.mu.Unlock()
	putResource(t, e, "models", "a", "A")
	// CBC checks only the padding: one wrong key in 256 or so still yields valid padding (the
	// API encrypts with a fresh IV each time), so three tries, of which one at least must fail.
	wrongKey := 0
	for range 3 {
		got, err := e.client.GetResource(context.Background(), "models", "a")
		switch {
		case errors.Is(err, security.ErrWrongKey) && !errors.Is(err, ErrUnavailable):
			wrongKey++
		case err != nil:
			t.Fatalf("err = %v, want security.ErrWrongKey", err)
		case string(got) == "A":
			t.Fatal("decrypted with the wrong key")
		}
	}
	if wrongKey == 0 {
		t.Fatal("three decryptions with a wrong key gave no security.ErrWrongKey")
	}
}

func TestListResources(t *testing.T) {
	e := newEnv(t, Options{}, nil)
	e.login(t)
	got, err := e.client.ListResources(context.Background(), "models")
	if err != nil || got == nil || len(got) != 0 {
		t.Fatalf("empty folder: %#v, %v", got, err)
	}
	putResource(t, e, "models", "b.small", "")
	putResource(t, e, "models", "a.small", "")
	got, err = e.client.ListResources(context.Background(), "models")
	if err != nil || !slices.Equal(got, []string{"a.small", "b.small"}) {
		t.Fatalf("ListResources = %v, %v", got, err)
	}
	e.setFault(func(w http.ResponseWriter, r *http.Request, _ http.Handler) { io.WriteString(w, `{"a":1}`) })
	if _, err := e.client.ListResources(context.Background(), "models"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("not a list: err = %v", err)
	}
}

func TestUploadResource(t *testing.T) {
	e := newEnv(t, Options{}, nil)
	e.login(t)
	data := bytes.Repeat([]byte{0, 1, 2, 0xff}, 1000)
	r := bytes.NewReader(append([]byte("skipped"), data...))
	r.Seek(int64(len("skipped")), io.SeekStart) // uploads from the current offset
	if err := e.client.UploadResource(context.Background(), "models", "a.small", r); err != nil {
		t.Fatal(err)
	}
	if cl := e.lastUploadLength(); cl <= int64(len(data)) {
		t.Errorf("Content-Length = %d, want the exact multipart length", cl)
	}
	names, err := e.client.ListResources(context.Background(), "models")
	if err != nil || !slices.Equal(names, []string{"a.small"}) {
		t.Fatalf("ListResources after upload = %v, %v", names, err)
	}
	// What the API stored comes back, encrypted for this device, and decrypts to the upload.
	got, err := e.client.GetResource(context.Background(), "models", "a.small")
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("GetResource after upload = %d bytes, %v; want %d", len(got), err, len(data))
	}
}

// A refused upload is sent again in full after the re-login, even when the server answered
// before reading the body.
func TestUploadRetrySendsBodyAgain(t *testing.T) {
	e := newEnv(t, Options{}, nil)
	e.login(t)
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB: more than socket buffers
	e.ref.RevokeTokens()
	if err := e.client.UploadResource(context.Background(), "models", "big", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if got, err := e.client.GetResource(context.Background(), "models", "big"); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("stored %d bytes (%v), want %d", len(got), err, len(data))
	}
	if n := e.calls(refapi.EndpointUpload); n != 2 {
		t.Errorf("%d attempts, want 2", n)
	}
	e.ref.SetFault(refapi.EndpointUpload, 403, 2)
	if err := e.client.UploadResource(context.Background(), "models", "big", bytes.NewReader(data)); !errors.Is(err, ErrForbidden) {
		t.Fatalf("err = %v, want ErrForbidden", err)
	}
}

func TestUploadSeekError(t *testing.T) {
	e := newEnv(t, Options{}, nil)
	e.login(t)
	err := e.client.UploadResource(context.Background(), "models", "a", badSeeker{})
	if err == nil || errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want the seek error", err)
	}
	if n := e.calls(refapi.EndpointUpload); n != 0 {
		t.Errorf("%d uploads reached the API", n)
	}
}

type badSeeker struct{ io.Reader }

func (badSeeker) Seek(int64, int) (int64, error) { return 0, errors.New("not seekable") }

func TestNew(t *testing.T) {
	for _, base := range []string{"", "api.azaion.com", "ftp://x", "http://", "://"} {
		if _, err := New(base, testHardware, Options{}); err == nil {
			t.Errorf("New(%q) accepted", base)
		}
	}
	if _, err := New("https://api.azaion.com", "", Options{}); err == nil {
		t.Error("New accepted an empty fingerprint")
	}
	// A base URL with a path prefix and a trailing slash keeps its prefix.
	var path string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path = r.URL.Path
		http.Error(w, "no", http.StatusUnauthorized)
	}))
	defer srv.Close()
	c, err := New(srv.URL+"/api/", testHardware, Options{})
	if err != nil {
		t.Fatal(err)
	}
	c.Login(context.Background(), testEmail, testPassword)
	if path != "/api/login" {
		t.Errorf("path = %q, want /api/login", path)
	}
}

// No email, password, token, API key, hardware fingerprint or CDN key in any error text or log
// line, even when the server echoes the request in its error answers (the reference API does
// not: faults in front of it do).
func TestNoSecretsLeak(t *testing.T) {
	e := newEnv(t, Options{}, nil)
	var errs []error
	ctx := context.Background()
	collect := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	apiKey := security.APIKey(testEmail, testPassword, security.HardwareHash(testHardware))
	echo := func(w http.ResponseWriter, r *http.Request, ref http.Handler) {
		body, _ := io.ReadAll(r.Body)
		var creds struct{ Email, Password string }
		json.Unmarshal(body, &creds)
		switch {
		case r.URL.Path == "/login" && creds.Password == testPassword+"x": // a rejection quoting what was sent
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusConflict)
			json.NewEncoder(w).Encode(map[string]string{"message": "bad credentials for " + creds.Email + " / " + creds.Password})
		case r.URL.Path == "/resources/list/a":
			http.Error(w, "token "+r.Header.Get("Authorization")+" key "+apiKey, http.StatusInternalServerError)
		case r.URL.Path == "/resources/list/b":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"error":"password %s hardware %s email %s"}`, jsonEscape(testPassword), jsonEscape(testHardware), testEmail)
		case r.URL.Path == "/resources/get/c":
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprintf(w, `{"detail":"hardware %s of %s not bound"}`, jsonEscape(testHardware), testEmail)
		default:
			r.Body = io.NopCloser(bytes.NewReader(body))
			ref.ServeHTTP(w, r)
		}
	}
	e.setFault(echo)
	collect(e.client.Login(ctx, testEmail, testPassword+"x"))
	e.login(t)
	token := e.token()
	_, err := e.client.ListResources(ctx, "a")
	collect(err)
	_, err = e.client.ListResources(ctx, "b")
	collect(err)
	_, err = e.client.GetResource(ctx, "c", "m.small")
	collect(err)
	_, err = e.client.GetResource(ctx, "models", "missing")
	collect(err)
	e.ref.RevokeTokens()
	e.ref.SetFault(refapi.EndpointLogin, 401, 1)
	_, err = e.client.KeyFragment(ctx)
	collect(err)
	if len(errs) != 6 {
		t.Fatalf("%d errors, want 6: %v", len(errs), errs)
	}
	for _, i := range []int{0, 1, 2, 3} {
		if !strings.Contains(errs[i].Error(), "[redacted]") {
			t.Errorf("the upstream reason was dropped rather than redacted: %v", errs[i])
		}
	}
	secrets := []string{testEmail, testPassword, token, apiKey, testHardware, security.HardwareHash(testHardware),
		"SN-SECRET-123", testCDN.DownloaderAccessSecret, testCDN.UploaderAccessSecret}
	for _, err := range errs {
		for _, s := range secrets {
			if strings.Contains(err.Error(), s) {
				t.Errorf("error %q contains a secret", err)
			}
		}
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "logging in to the resource API again") {
		t.Errorf("expected log lines missing:\n%s", logs)
	}
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("logs contain a secret:\n%s", logs)
		}
	}
}

// jsonEscape escapes as System.Text.Json does by default, "+" included.
func jsonEscape(s string) string {
	return strings.NewReplacer(`"`, `\"`, `+`, `\u002B`, `\`, `\\`).Replace(s)
}

// TestOnLoginAndList: OnLogin is called after each successful Login, not after a failed one nor
// after the client's own re-login; ListResources names the small parts a folder holds (SPEC §3),
// as prefetch reads them.
func TestOnLoginAndList(t *testing.T) {
	var mu sync.Mutex
	logins := 0
	e := newEnv(t, Options{OnLogin: func() { mu.Lock(); logins++; mu.Unlock() }}, nil)
	count := func() int { mu.Lock(); defer mu.Unlock(); return logins }
	if err := e.client.Login(context.Background(), testEmail, "wrong"); err == nil {
		t.Fatal("a wrong password logged in")
	}
	if n := count(); n != 0 {
		t.Fatalf("OnLogin after a failed login: %d calls", n)
	}
	e.login(t)
	putResource(t, e, "models", "b.bin.small", "x")
	putResource(t, e, "models", "a.bin.small", "x")
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
