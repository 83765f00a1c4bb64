// Package refapi is a reference implementation of the upstream Azaion Resource API (SPEC §3–§5):
// users, JWT login, resources encrypted per request with the caller's API key, multipart uploads,
// the archive key fragment and the generated cdn.yaml.
//
// The loader's tests run against it, and it serves a local try-out (cmd/azaion-refapi). It is
// written from the SPEC alone and carries its own cryptography, names and protocol: of the
// loader's packages it imports only protocol-free plumbing (internal/streams, io.Reader
// wrappers, and internal/httprec, which records what a handler answered), so that a test
// passing against it means both sides read the contract the same way, not that they share a
// bug.
//
// It behaves as the real ASP.NET server does where a client could notice: JSON field names bind
// case-insensitively, a JSON body needs a JSON Content-Type (else 415), errors are
// application/problem+json, a 401 carries "WWW-Authenticate: Bearer".
//
// Status codes for failures:
//
//	400  bad JSON, a missing field, a path-like folder or file name, a multipart body without a file "data"
//	401  login: unknown email or wrong password; elsewhere: a missing, malformed, expired or revoked token
//	403  resources/get: the password is not the caller's, or the hardware differs from the bound one
//	404  unknown resource or route
//	405  known route, wrong method
//	413  upload larger than Config.MaxUpload
//	415  JSON endpoint called without a JSON Content-Type
//
// Test hooks (Calls, SetFault, RevokeTokens, SetHardware, SetKeyFragment, PutResource) let tests
// observe the traffic and provoke the failures the loader must survive.
package refapi

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/azaion/loader/internal/httprec"
)

// Endpoint names for Calls and SetFault.
const (
	EndpointLogin       = "login"
	EndpointGet         = "resources/get"
	EndpointUpload      = "resources/upload"
	EndpointList        = "resources/list"
	EndpointKeyFragment = "key-fragment"
)

var endpoints = map[string]bool{
	EndpointLogin: true, EndpointGet: true, EndpointUpload: true, EndpointList: true, EndpointKeyFragment: true,
}

// Defaults for zero Config fields.
const (
	DefaultTokenLifetime = 4 * time.Hour // SPEC §3
	DefaultMaxUpload     = 1 << 30
)

// CDNSettings are served as cdn.yaml (SPEC §3) under the SPEC's snake_case keys.
type CDNSettings struct {
	Host                   string `yaml:"host"`
	DownloaderAccessKey    string `yaml:"downloader_access_key"`
	DownloaderAccessSecret string `yaml:"downloader_access_secret"`
	UploaderAccessKey      string `yaml:"uploader_access_key"`
	UploaderAccessSecret   string `yaml:"uploader_access_secret"`
}

// Config configures a Server.
type Config struct {
	Users []User
	// DataDir holds the resources in plaintext, as DataDir/<folder>/<fileName>; a resource is
	// encrypted per request with the caller's API key, as the real API does. Required.
	DataDir string
	// JWTSecret signs tokens with HS256. Empty means a random secret: tokens then cannot be
	// verified by anyone else, which is what the loader does by default (SPEC §3).
	JWTSecret     []byte
	TokenLifetime time.Duration // zero means DefaultTokenLifetime
	KeyFragment   []byte        // served raw by GET /binary-split/key-fragment
	CDN           CDNSettings
	Logger        *slog.Logger // nil discards
	MaxUpload     int64        // bytes; zero means DefaultMaxUpload
	// Now is the server's clock for issuing and checking tokens; nil means time.Now. Tests
	// share a settable clock with the client, so a token expires when they say, not after
	// a sleep.
	Now func() time.Time
}

// Server is the reference Resource API; it is an http.Handler. Its methods are safe for
// concurrent use.
type Server struct {
	dataDir   string
	secret    []byte
	lifetime  time.Duration
	cdn       CDNSettings
	log       *slog.Logger
	maxUpload int64
	now       func() time.Time
	mux       *http.ServeMux

	mu          sync.Mutex
	users       map[string]*User // by email
	byID        map[string]*User
	keyFragment []byte
	generation  uint64 // tokens carry the generation they were issued in; see RevokeTokens
	calls       map[string]int
	faults      map[string]fault
}

type fault struct{ status, n int }

// New returns a Server for cfg. It creates DataDir if needed.
func New(cfg Config) (*Server, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("refapi: DataDir is required")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("refapi: %w", err)
	}
	if err := checkUsers(cfg.Users); err != nil {
		return nil, fmt.Errorf("refapi: %w", err)
	}
	s := &Server{
		dataDir:     cfg.DataDir,
		secret:      append([]byte(nil), cfg.JWTSecret...),
		lifetime:    cfg.TokenLifetime,
		cdn:         cfg.CDN,
		log:         cfg.Logger,
		maxUpload:   cfg.MaxUpload,
		now:         cfg.Now,
		users:       make(map[string]*User, len(cfg.Users)),
		byID:        make(map[string]*User, len(cfg.Users)),
		keyFragment: append([]byte(nil), cfg.KeyFragment...),
		calls:       make(map[string]int),
		faults:      make(map[string]fault),
	}
	if len(s.secret) == 0 {
		s.secret = make([]byte, 32)
		rand.Read(s.secret)
	}
	if s.lifetime <= 0 {
		s.lifetime = DefaultTokenLifetime
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.maxUpload <= 0 {
		s.maxUpload = DefaultMaxUpload
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	for _, u := range cfg.Users {
		if u.ID == "" {
			u.ID = newID()
		}
		if u.Role == "" {
			u.Role = "None"
		}
		if s.byID[u.ID] != nil {
			return nil, fmt.Errorf("refapi: duplicate user id %q", u.ID)
		}
		s.users[u.Email] = &u
		s.byID[u.ID] = &u
	}

	mux := http.NewServeMux()
	mux.HandleFunc("POST /login", s.handleLogin)
	// The folder may be empty (cdn.yaml lives there); clients write that as /resources/get or
	// /resources/get/, and ASP.NET's optional route parameter accepts both.
	mux.HandleFunc("POST /resources/get", s.handleGet)
	mux.HandleFunc("POST /resources/get/{$}", s.handleGet)
	mux.HandleFunc("POST /resources/get/{folder}", s.handleGet)
	mux.HandleFunc("POST /resources/{folder}", s.handleUpload)
	mux.HandleFunc("GET /resources/list/{folder}", s.handleList)
	mux.HandleFunc("GET /binary-split/key-fragment", s.handleKeyFragment)
	s.mux = mux
	return s, nil
}

// ServeHTTP counts the request, applies an injected fault, rejects path-like names and
// dispatches; every request is logged with method, path and status only (never a body, a
// password or a token).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := httprec.New(w)
	endpoint := endpointOf(r.URL.Path)
	defer func() {
		s.log.Info("request", "method", r.Method, "path", r.URL.Path, "endpoint", endpoint,
			"status", sw.Status(), "duration", time.Since(start))
	}()

	if endpoint != "" {
		if status, ok := s.record(endpoint); ok {
			writeError(sw, status, "injected fault")
			return
		}
	}
	// ServeMux would answer a path with "." or ".." segments with a redirect to the cleaned
	// path, i.e. to another resource. A name is never a path: refuse it before routing.
	if hasDotSegment(r.URL.Path) {
		writeError(sw, http.StatusBadRequest, "invalid path")
		return
	}
	s.mux.ServeHTTP(sw, r)
}

// endpointOf names the endpoint a path belongs to, whatever the method, so that Calls counts
// failed and misrouted requests too.
func endpointOf(p string) string {
	switch {
	case p == "/login":
		return EndpointLogin
	case p == "/resources/get" || strings.HasPrefix(p, "/resources/get/"):
		return EndpointGet
	case p == "/resources/list" || strings.HasPrefix(p, "/resources/list/"):
		return EndpointList
	case p == "/binary-split/key-fragment":
		return EndpointKeyFragment
	case strings.HasPrefix(p, "/resources/"):
		return EndpointUpload
	}
	return ""
}

func hasDotSegment(p string) bool {
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// record counts a request to endpoint and reports the status of a pending fault, if any.
func (s *Server) record(endpoint string) (status int, faulted bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[endpoint]++
	f, ok := s.faults[endpoint]
	if !ok {
		return 0, false
	}
	if f.n > 0 {
		f.n--
		if f.n == 0 {
			delete(s.faults, endpoint)
		} else {
			s.faults[endpoint] = f
		}
	}
	return f.status, true
}

func mustEndpoint(endpoint string) {
	// A misspelt endpoint would make a test assert on a counter nothing ever increments.
	if !endpoints[endpoint] {
		panic("refapi: unknown endpoint " + endpoint)
	}
}

// Calls reports how many requests reached endpoint (one of the Endpoint constants) since the
// start or the last ResetCalls, failed and faulted ones included. It panics on an unknown name.
func (s *Server) Calls(endpoint string) int {
	mustEndpoint(endpoint)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[endpoint]
}

// ResetCalls sets every counter of Calls to zero.
func (s *Server) ResetCalls() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.calls)
}

// SetFault makes the next n requests to endpoint answer status without being handled (they
// are still counted). n < 0 keeps the fault until SetFault(endpoint, _, 0) clears it. It
// panics on an unknown endpoint name.
func (s *Server) SetFault(endpoint string, status, n int) {
	mustEndpoint(endpoint)
	s.mu.Lock()
	defer s.mu.Unlock()
	if n == 0 {
		delete(s.faults, endpoint)
		return
	}
	s.faults[endpoint] = fault{status: status, n: n}
}

// RevokeTokens makes every token issued so far answer 401 from now on; tokens from later
// logins work. Tests use it to make the loader log in again.
func (s *Server) RevokeTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.generation++
}

// SetKeyFragment replaces the bytes served by GET /binary-split/key-fragment.
func (s *Server) SetKeyFragment(b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keyFragment = append([]byte(nil), b...)
}

// SetHardware binds the user with email to hardware; empty unbinds, so the next resource
// request binds again. Unknown emails are ignored.
func (s *Server) SetHardware(email, hardware string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.users[email]; u != nil {
		u.Hardware = hardware
	}
}

// User returns a copy of the user with email, e.g. to see which hardware got bound.
func (s *Server) User(email string) (User, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.users[email]
	if u == nil {
		return User{}, false
	}
	return *u, true
}

// ResourcePath is where the plaintext of folder/name lives (an empty folder is the top
// level, where cdn.yaml would be). It is "" for names a client could not ask for.
func (s *Server) ResourcePath(folder, name string) string {
	if (folder != "" && !validName(folder)) || !validName(name) {
		return ""
	}
	return filepath.Join(s.dataDir, folder, name)
}
