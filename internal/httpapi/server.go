// Package httpapi is the loader's own HTTP API (SPEC §2): health and status, login, streaming
// download and upload of model resources, and the Docker unlock workflow.
//
// The package depends on the domain packages only through the small interfaces below. Routes are
// registered in one place (routes.go); handlers return errors to one writer (errors.go) that maps
// sentinel errors to status codes in one table.
//
// Decisions where SPEC §2 is silent:
//   - JSON bodies: fields an endpoint does not take are ignored (as the seed's FastAPI models
//     did); an empty body, invalid JSON, a value that is not an object, a field of the wrong
//     type or more than one value is 422 naming the problem; a body past Config.MaxJSONBody
//     is 413.
//   - POST /load: "folder" is required and must be a valid, non-empty name (the CDN has no
//     bucket without a name); "filename" may be omitted or empty, then the path's is used.
//   - POST /upload: the file is streamed as it arrives, so "folder" must come before the file
//     part (upload.go says why).
//   - Unknown paths and wrong methods answer 404 {"detail":"Not Found"} and 405
//     {"detail":"Method Not Allowed"} (with Allow), FastAPI's words.
//   - /load/ and /upload/ paths are checked before ServeMux, so an unclean name such as
//     "/load/.." is 422, never a redirect. With a token configured, 401 comes first.
package httpapi

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/azaion/loader/internal/resources"
	"github.com/azaion/loader/internal/unattended"
	"github.com/azaion/loader/internal/unlock"
	"github.com/prometheus/client_golang/prometheus"
)

// Session is who the loader is logged in as. It names the user by id, never by email: the email
// is a credential (SPEC §7) and /status is readable by any client on the device.
type Session struct {
	UserID string
	Role   string
}

// Auth logs the loader in to the Resource API and tells who it is logged in as.
type Auth interface {
	// Login checks the credentials upstream and keeps them for later calls.
	Login(ctx context.Context, email, password string) error
	// Session reports the current session; false means not logged in.
	Session() (Session, bool)
}

// Resources downloads and uploads model resources (SPEC §5).
type Resources interface {
	// Open starts the download of folder/name. The Resource's Size is exact and known before the
	// first byte; the caller closes it. ctx carries the request's values but is not cancelled
	// when the client goes away (a client that half-closed still wants its answer): a client
	// that is gone makes the next write of the answer fail, which ends the stream.
	Open(ctx context.Context, folder, name string) (*resources.Resource, error)
	// Upload stores the content of r as folder/name. It reads r to EOF before it commits
	// anything: an error from r (including one httpapi injects to reject the request) must make
	// Upload fail, and should be wrapped with %w.
	Upload(ctx context.Context, folder, name string, r io.Reader) error
	// CacheStatus lists the model cache for GET /cache (SPEC §11).
	CacheStatus() (resources.CacheStatus, error)
}

// Unlocker runs the unlock workflow (SPEC §6).
type Unlocker interface {
	// Start answers StateReady if the images are already loaded, the current state if a run is
	// under way, and otherwise starts a run (which must outlive ctx, the request's context) and
	// answers its first state. unlock.ErrArchiveNotFound when there is nothing to unlock.
	Start(ctx context.Context, email, password string) (unlock.State, error)
	// Status is a snapshot for GET /unlock/status.
	Status() unlock.Status
}

// Unattended is the unattended work of a device identity (SPEC §10), shown by GET /status.
type Unattended interface {
	// Status is a snapshot; it must not wait on the work.
	Status() unattended.Status
}

// DefaultMaxJSONBody is the largest JSON request body accepted when Config.MaxJSONBody is 0.
const DefaultMaxJSONBody = 1 << 20

// DefaultUploadFolder is the folder of an upload that names none.
const DefaultUploadFolder = "models"

// Config holds what New needs. Auth, Resources and Unlock are required.
type Config struct {
	Auth      Auth
	Resources Resources
	Unlock    Unlocker
	// Unattended is optional: nil shows the unattended work as "off".
	Unattended Unattended

	// ModelCacheDir is shown in GET /status.
	ModelCacheDir string
	// APIToken, when not empty, is the bearer token every endpoint except GET /health requires
	// (LOADER_API_TOKEN).
	APIToken string
	// Logger receives one line per request and the details of failures; nil discards them.
	Logger *slog.Logger
	// MaxJSONBody bounds JSON request bodies (and the non-file fields of an upload); larger
	// ones are answered 413. 0 means DefaultMaxJSONBody.
	MaxJSONBody int64
	// BodyTimeout: a JSON body must arrive whole within it, an upload body must deliver at
	// least MinUploadProgress bytes per BodyTimeout; else 408. 0 means DefaultBodyTimeout.
	// It works on any http.Server (it sets the connection's read deadline).
	BodyTimeout time.Duration

	// Registry, when not nil, receives the request counter and latency histogram.
	Registry prometheus.Registerer
	// Gatherer, when not nil, is served at GET /metrics; otherwise /metrics answers 404.
	Gatherer prometheus.Gatherer
}

// Server is the loader's HTTP API. It is an http.Handler; the caller runs the http.Server.
type Server struct {
	auth      Auth
	resources Resources
	unlock    Unlocker
	unattend  Unattended

	modelCacheDir string
	maxJSONBody   int64
	bodyTimeout   time.Duration
	tokenHash     []byte // SHA-256 of Config.APIToken; nil when no token is required
	log           *slog.Logger
	metrics       *metrics // nil when Config.Registry is nil
	gatherer      prometheus.Gatherer

	mux     *http.ServeMux
	handler http.Handler // mux wrapped in the middleware
}

// New wires the server: routes, middleware and metrics.
func New(cfg Config) *Server {
	s := &Server{
		auth:          cfg.Auth,
		resources:     cfg.Resources,
		unlock:        cfg.Unlock,
		unattend:      cfg.Unattended,
		modelCacheDir: cfg.ModelCacheDir,
		maxJSONBody:   cfg.MaxJSONBody,
		bodyTimeout:   cfg.BodyTimeout,
		log:           cfg.Logger,
		gatherer:      cfg.Gatherer,
		mux:           http.NewServeMux(),
	}
	if s.maxJSONBody <= 0 {
		s.maxJSONBody = DefaultMaxJSONBody
	}
	if s.bodyTimeout <= 0 {
		s.bodyTimeout = DefaultBodyTimeout
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if cfg.APIToken != "" {
		s.tokenHash = hashToken(cfg.APIToken)
	}
	if cfg.Registry != nil {
		s.metrics = newMetrics(cfg.Registry)
	}
	for _, rt := range s.routes() {
		s.mux.Handle(rt.Method+" "+rt.Path, rt.handler)
	}
	// Outermost first: observe (log, metrics) sees every answer, including a recovered panic
	// and the rejections of the checks inside it.
	s.handler = s.observe(s.recoverPanic(s.requireToken(s.checkNames(http.HandlerFunc(s.route)))))
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.handler.ServeHTTP(w, r)
}
