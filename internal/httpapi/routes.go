package httpapi

import (
	"bytes"
	"net/http"
)

// Route is one endpoint of the API.
type Route struct {
	Method string // "GET" or "POST"
	Path   string // ServeMux path pattern, also the OpenAPI path: "/load/{filename}"

	handler http.Handler
}

// Routes lists every endpoint the server answers; the OpenAPI document describes the same set.
func (s *Server) Routes() []Route {
	rts := s.routes()
	for i := range rts {
		rts[i].handler = nil
	}
	return rts
}

// routes is the one place endpoints are registered.
func (s *Server) routes() []Route {
	return []Route{
		{http.MethodGet, "/health", s.handle(s.health)},
		{http.MethodGet, "/status", s.handle(s.status)},
		{http.MethodPost, "/login", s.handle(s.login)},
		{http.MethodPost, "/load/{filename}", s.handle(s.load)},
		{http.MethodPost, "/upload/{filename}", s.handle(s.upload)},
		{http.MethodPost, "/unlock", s.handle(s.startUnlock)},
		{http.MethodGet, "/unlock/status", s.handle(s.unlockStatus)},
		{http.MethodGet, "/cache", s.handle(s.cacheStatus)},
		{http.MethodGet, "/metrics", s.handleMetrics()},
		{http.MethodGet, "/openapi.json", s.handle(s.openAPI)},
		{http.MethodGet, "/docs", s.handle(s.docsPage)},
		{http.MethodGet, "/docs/{file}", s.handle(s.docsFile)},
	}
}

// route dispatches r through the mux. What no route answers keeps the mux's status (404, 405
// with its Allow header, or a redirect to a cleaned path) but gets a JSON body, as FastAPI gave
// the seed's clients: {"detail":"Not Found"} and {"detail":"Method Not Allowed"}.
func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	h, pattern := s.mux.Handler(r)
	if pattern != "" {
		s.mux.ServeHTTP(w, r)
		return
	}
	rec := &headerRecorder{header: make(http.Header)}
	h.ServeHTTP(rec, r)
	switch rec.status {
	case http.StatusNotFound:
		s.writeError(w, r, errNoRoute)
	case http.StatusMethodNotAllowed:
		w.Header().Set("Allow", rec.header.Get("Allow"))
		s.writeError(w, r, errMethodNotAllowed)
	default: // a redirect of an unclean path such as //health: pass it on as the mux wrote it
		for k, v := range rec.header {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.status)
		w.Write(rec.body.Bytes())
	}
}

// headerRecorder keeps what the mux's own answer for an unmatched request says.
type headerRecorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (h *headerRecorder) Header() http.Header { return h.header }

func (h *headerRecorder) WriteHeader(status int) {
	if h.status == 0 {
		h.status = status
	}
}

func (h *headerRecorder) Write(b []byte) (int, error) {
	if h.status == 0 {
		h.status = http.StatusOK
	}
	if h.body.Len() < 4<<10 { // the mux writes a line or two
		h.body.Write(b)
	}
	return len(b), nil
}

// handlerFunc is a handler that returns its failure instead of writing it.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// handle adapts h to http.Handler: an error h returns goes to writeError.
func (s *Server) handle(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			s.writeError(w, r, err)
		}
	})
}
