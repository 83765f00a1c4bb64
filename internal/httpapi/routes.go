package httpapi

import "net/http"

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
	}
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
