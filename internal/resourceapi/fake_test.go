package resourceapi

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// The test side of SPEC §4, written from the SPEC rather than with internal/security, so a
// wrong key derivation in either shows up here.
func specHash(s string) string {
	sum := sha512.Sum384([]byte(s))
	return base64.StdEncoding.EncodeToString(sum[:])
}

func specAPIKey(email, password, hardware string) string {
	hw := specHash("Azaion_" + hardware + "_%$$$)0_")
	return specHash(email + "-" + password + "-" + hw + "-#%@AzaionKey@%#---")
}

func specEncrypt(t testing.TB, plain []byte, key string) []byte {
	k := sha256.Sum256([]byte(key))
	block, err := aes.NewCipher(k[:])
	if err != nil {
		t.Fatal(err)
	}
	n := aes.BlockSize - len(plain)%aes.BlockSize
	padded := append(bytes.Clone(plain), bytes.Repeat([]byte{byte(n)}, n)...)
	out := make([]byte, aes.BlockSize+len(padded))
	rand.Read(out[:aes.BlockSize])
	cipher.NewCBCEncrypter(block, out[:aes.BlockSize]).CryptBlocks(out[aes.BlockSize:], padded)
	return out
}

const (
	testEmail    = "op@azaion.test"
	testPassword = "Pa55+w/ord\"secret"
	testHardware = "CPU: Test CPU. GPU: Unknown. Memory: 8000000. DriveSerial: SN-SECRET-123"
	testSecret   = "hmac-secret-for-tests-only-0123456789"
	testCDNYAML  = "host: cdn.test:9000\ndownloader_access_key: dl-key\ndownloader_access_secret: dl-secret-value\n" +
		"uploader_access_key: ul-key\nuploader_access_secret: ul-secret-value\n"
)

// fakeAPI is a small Resource API: one user, files in memory, HS256 tokens, scripted failures.
type fakeAPI struct {
	t        testing.TB
	clock    *fakeClock
	lifetime time.Duration
	claims   func(jwt.MapClaims) // edits the claims of each issued token

	mu       sync.Mutex
	files    map[string][]byte // "folder/name" or "name" -> plaintext
	tokens   map[string]bool   // tokens the server accepts
	faults   map[string][]int  // endpoint -> statuses to answer with, in order
	calls    map[string]int
	uploads  map[string][]byte
	uploadCL []int64 // Content-Length of each upload request
	serial   int
	fragment []byte
}

func newFakeAPI(t testing.TB, clock *fakeClock) *fakeAPI {
	return &fakeAPI{
		t:        t,
		clock:    clock,
		lifetime: 4 * time.Hour,
		files:    map[string][]byte{"cdn.yaml": []byte(testCDNYAML)},
		tokens:   map[string]bool{},
		faults:   map[string][]int{},
		calls:    map[string]int{},
		uploads:  map[string][]byte{},
		fragment: []byte("key-fragment-bytes"),
	}
}

// fail makes the next len(statuses) calls to endpoint answer with those statuses.
func (f *fakeAPI) fail(endpoint string, statuses ...int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults[endpoint] = append(f.faults[endpoint], statuses...)
}

func (f *fakeAPI) count(endpoint string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[endpoint]
}

func (f *fakeAPI) revokeTokens() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.tokens)
}

// The setters and getters below lock, because the race detector sees no ordering through
// the sockets between the test and the server's goroutines.

func (f *fakeAPI) put(name string, data []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.files[name] = data
}

func (f *fakeAPI) remove(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.files, name)
}

func (f *fakeAPI) setFragment(b []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fragment = b
}

func (f *fakeAPI) setClaims(edit func(jwt.MapClaims)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.claims = edit
}

func (f *fakeAPI) uploaded(name string) (data []byte, contentLength int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.uploadCL) > 0 {
		contentLength = f.uploadCL[len(f.uploadCL)-1]
	}
	return f.uploads[name], contentLength
}

// record counts a call and pops a scripted failure, 0 if none.
func (f *fakeAPI) record(endpoint string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[endpoint]++
	if q := f.faults[endpoint]; len(q) > 0 {
		f.faults[endpoint] = q[1:]
		return q[0]
	}
	return 0
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch {
	case r.Method == http.MethodPost && p == "/login":
		f.login(w, r)
	case r.Method == http.MethodPost && (p == "/resources/get" || strings.HasPrefix(p, "/resources/get/")):
		f.authorized(w, r, "get", f.get)
	case r.Method == http.MethodGet && strings.HasPrefix(p, "/resources/list/"):
		f.authorized(w, r, "list", f.list)
	case r.Method == http.MethodPost && strings.HasPrefix(p, "/resources/"):
		f.authorized(w, r, "upload", f.upload)
	case r.Method == http.MethodGet && p == "/binary-split/key-fragment":
		f.authorized(w, r, "key", func(w http.ResponseWriter, r *http.Request) {
			f.mu.Lock()
			b := f.fragment
			f.mu.Unlock()
			w.Write(b)
		})
	default:
		http.NotFound(w, r)
	}
}

func (f *fakeAPI) login(w http.ResponseWriter, r *http.Request) {
	if status := f.record("login"); status != 0 {
		http.Error(w, "scripted failure", status)
		return
	}
	var req struct{ Email, Password string }
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, "bad json", http.StatusBadRequest)
		return
	}
	if req.Email != testEmail || req.Password != testPassword {
		// Echo what was sent, as careless servers do: the client must not pass it on.
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusConflict)
		json.NewEncoder(w).Encode(map[string]string{"message": "bad credentials for " + req.Email + " / " + req.Password})
		return
	}
	now := f.clock.Now()
	f.mu.Lock()
	f.serial++
	claims := jwt.MapClaims{
		"nameid":      "user-1",
		"unique_name": testEmail,
		"role":        "Operator",
		"iss":         Issuer,
		"iat":         now.Unix(),
		"exp":         now.Add(f.lifetime).Unix(),
		"jti":         fmt.Sprint(f.serial),
	}
	if f.claims != nil {
		f.claims(claims)
	}
	token, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(testSecret))
	if err != nil {
		f.mu.Unlock()
		f.t.Error(err)
		return
	}
	f.tokens[token] = true
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]string{"token": token})
}

func (f *fakeAPI) authorized(w http.ResponseWriter, r *http.Request, endpoint string, h http.HandlerFunc) {
	status := f.record(endpoint)
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	f.mu.Lock()
	ok = ok && f.tokens[token]
	f.mu.Unlock()
	switch {
	case status != 0:
		http.Error(w, "scripted failure", status)
	case !ok:
		http.Error(w, "token not accepted", http.StatusUnauthorized)
	default:
		h(w, r)
	}
}

func (f *fakeAPI) get(w http.ResponseWriter, r *http.Request) {
	var req struct{ Password, Hardware, FileName string }
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, "bad json", http.StatusBadRequest)
		return
	}
	if req.Password != testPassword || req.Hardware != testHardware {
		// Echo again, this time as ProblemDetails.
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusForbidden)
		json.NewEncoder(w).Encode(map[string]string{"detail": "hardware " + req.Hardware + " not bound"})
		return
	}
	name := req.FileName
	if folder := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, "/resources/get"), "/"); folder != "" {
		name = folder + "/" + name
	}
	f.mu.Lock()
	data, ok := f.files[name]
	f.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Write(specEncrypt(f.t, data, specAPIKey(testEmail, req.Password, req.Hardware)))
}

func (f *fakeAPI) list(w http.ResponseWriter, r *http.Request) {
	prefix := strings.TrimPrefix(r.URL.Path, "/resources/list/") + "/"
	names := []string{}
	f.mu.Lock()
	for k := range f.files {
		if n, ok := strings.CutPrefix(k, prefix); ok {
			names = append(names, n)
		}
	}
	f.mu.Unlock()
	json.NewEncoder(w).Encode(names)
}

func (f *fakeAPI) upload(w http.ResponseWriter, r *http.Request) {
	folder := strings.TrimPrefix(r.URL.Path, "/resources/")
	file, header, err := r.FormFile("data")
	if err != nil {
		http.Error(w, "no data", http.StatusBadRequest)
		return
	}
	data, err := io.ReadAll(file)
	if err != nil {
		http.Error(w, "read", http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.uploads[folder+"/"+header.Filename] = data
	f.files[folder+"/"+header.Filename] = data
	f.uploadCL = append(f.uploadCL, r.ContentLength)
	f.mu.Unlock()
}

// fakeClock is a settable clock, safe for concurrent use.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// syncBuffer collects log output from concurrent goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// env is a fake API, a client of it and the client's log.
type env struct {
	api    *fakeAPI
	srv    *httptest.Server
	client *Client
	clock  *fakeClock
	logs   *syncBuffer

	mu       sync.Mutex
	override http.Handler // answers instead of api while set
}

// setHandler makes h answer instead of the fake API; nil restores the fake.
func (e *env) setHandler(h http.Handler) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.override = h
}

func newEnv(t *testing.T, opts Options) *env {
	t.Helper()
	e := &env{clock: newClock(), logs: &syncBuffer{}}
	e.api = newFakeAPI(t, e.clock)
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		h := e.override
		e.mu.Unlock()
		if h == nil {
			h = e.api
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(e.srv.Close)
	if opts.Now == nil {
		opts.Now = e.clock.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	c, err := New(e.srv.URL, testHardware, opts)
	if err != nil {
		t.Fatal(err)
	}
	e.client = c
	return e
}

// login logs the client in and fails the test if that fails.
func (e *env) login(t *testing.T) {
	t.Helper()
	if err := e.client.Login(context.Background(), testEmail, testPassword); err != nil {
		t.Fatalf("Login: %v", err)
	}
}
