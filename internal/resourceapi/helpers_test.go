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
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/azaion/loader/internal/refapi"
	"github.com/azaion/loader/internal/testenv"
)

// The client's tests run against the reference Resource API (internal/refapi) over real HTTP:
// it is written from the SPEC with its own cryptography, so a test passing here means both
// sides read the contract the same way. What the reference API never does (echo secrets, send
// claims it would not, answer garbage) is put in front of it as an explicit fault, or served by
// a small handler of the test's own.

const (
	testEmail    = "op@azaion.test"
	testPassword = "Pa55+w/ord\"secret"
	testUserID   = "user-1"
	testHardware = "CPU: Test CPU. GPU: Unknown. Memory: 8000000. DriveSerial: SN-SECRET-123"
	testSecret   = "hmac-secret-for-tests-only-0123456789"
)

var testCDN = refapi.CDNSettings{
	Host:                   "cdn.test:9000",
	DownloaderAccessKey:    "dl-key",
	DownloaderAccessSecret: "dl-secret-value",
	UploaderAccessKey:      "ul-key",
	UploaderAccessSecret:   "ul-secret-value",
}

// fakeClock is a settable clock, safe for concurrent use: the reference API and the client
// share one, so tokens expire when the test says.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2031, 5, 1, 8, 0, 0, 0, time.UTC)} }

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

// fault answers a request in place of the reference API, or passes it on to ref.
type fault func(w http.ResponseWriter, r *http.Request, ref http.Handler)

// env is the reference API, a client of it and the client's log.
type env struct {
	ref    *refapi.Server
	srv    *httptest.Server
	client *Client
	clock  *fakeClock
	logs   *testenv.SyncBuffer

	mu       sync.Mutex
	fault    fault
	uploadCL int64 // Content-Length of the last upload request
}

// newEnv starts the reference API with one Operator (testEmail) and a client of it on the same
// clock. edit may change the reference API's configuration first.
func newEnv(t *testing.T, opts Options, edit func(*refapi.Config)) *env {
	t.Helper()
	e := &env{clock: newClock(), logs: &testenv.SyncBuffer{}}
	cfg := refapi.Config{
		Users: []refapi.User{
			{ID: testUserID, Email: testEmail, Password: testPassword, Role: "Operator"},
			{ID: "user-2", Email: "uploader@azaion.test", Password: "up-secret", Role: "ResourceUploader"},
		},
		DataDir:     t.TempDir(),
		JWTSecret:   []byte(testSecret),
		KeyFragment: []byte("key-fragment-bytes"),
		CDN:         testCDN,
		Now:         e.clock.Now,
	}
	if edit != nil {
		edit(&cfg)
	}
	var err error
	if e.ref, err = refapi.New(cfg); err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		f := e.fault
		if r.Method == http.MethodPost && endpointOf(r.Method, r.URL.Path) == "resources/upload" {
			e.uploadCL = r.ContentLength
		}
		e.mu.Unlock()
		if f != nil {
			f(w, r, e.ref)
			return
		}
		e.ref.ServeHTTP(w, r)
	}))
	t.Cleanup(e.srv.Close)
	if opts.Now == nil {
		opts.Now = e.clock.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if e.client, err = New(e.srv.URL, testHardware, opts); err != nil {
		t.Fatal(err)
	}
	return e
}

// setFault puts f in front of the reference API; nil takes it away.
func (e *env) setFault(f fault) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.fault = f
}

func (e *env) lastUploadLength() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.uploadCL
}

// calls is how many requests reached endpoint of the reference API.
func (e *env) calls(endpoint string) int { return e.ref.Calls(endpoint) }

// login logs the client in and fails the test if that fails.
func (e *env) login(t *testing.T) {
	t.Helper()
	if err := e.client.Login(context.Background(), testEmail, testPassword); err != nil {
		t.Fatalf("Login: %v", err)
	}
}

// editTokens is a fault that passes /login on to the reference API and re-signs the token it
// issues with its claims changed by edit: claims the reference API never sends.
func editTokens(t *testing.T, edit func(jwt.MapClaims)) fault {
	return func(w http.ResponseWriter, r *http.Request, ref http.Handler) {
		if r.URL.Path != "/login" {
			ref.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		ref.ServeHTTP(rec, r)
		var body struct {
			Token string `json:"token"`
		}
		if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &body) != nil {
			w.WriteHeader(rec.Code)
			w.Write(rec.Body.Bytes())
			return
		}
		claims := jwt.MapClaims{}
		if _, _, err := jwt.NewParser().ParseUnverified(body.Token, claims); err != nil {
			t.Error(err)
			return
		}
		edit(claims)
		token, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(testSecret))
		if err != nil {
			t.Error(err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{"token": token})
	}
}

// The SPEC §4 side of a fault that serves an encrypted body the reference API never would
// (cdn.yaml that is not YAML), written from the SPEC rather than with internal/security.
func specHash(s string) string {
	sum := sha512.Sum384([]byte(s))
	return base64.StdEncoding.EncodeToString(sum[:])
}

func specAPIKey(email, password, hardware string) string {
	hw := specHash("Azaion_" + hardware + "_%$$$)0_")
	return specHash(email + "-" + password + "-" + hw + "-#%@AzaionKey@%#---")
}

func specEncrypt(plain []byte, key string) []byte {
	k := sha256.Sum256([]byte(key))
	block, err := aes.NewCipher(k[:])
	if err != nil {
		panic(err)
	}
	n := aes.BlockSize - len(plain)%aes.BlockSize
	padded := append(bytes.Clone(plain), bytes.Repeat([]byte{byte(n)}, n)...)
	out := make([]byte, aes.BlockSize+len(padded))
	rand.Read(out[:aes.BlockSize])
	cipher.NewCBCEncrypter(block, out[:aes.BlockSize]).CryptBlocks(out[aes.BlockSize:], padded)
	return out
}

func runConcurrently(t *testing.T, n int, f func() error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-start
			errs <- f()
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}
