package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/azaion/loader/internal/httprec"
	"github.com/azaion/loader/internal/resources"
)

// goneWriter notes that the client went away when a write to it fails.
type goneWriter struct {
	http.ResponseWriter
	st *requestState
}

func (w goneWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	if err != nil {
		w.st.clientGone.Store(true)
		err = fmt.Errorf("%w: %w", errClientGone, err)
	}
	return n, err
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w goneWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// answerOf is the recorder observe put in front of w, if any.
func answerOf(w http.ResponseWriter) (*httprec.Recorder, bool) {
	rec, ok := w.(*httprec.Recorder)
	return rec, ok
}

// observe logs one line per request and counts it in the metrics. It logs the method, the path,
// the route pattern, the status, the body size and the duration: never a body, a query or a
// header (the bearer token lives in one). A request whose client went away before its answer
// was complete counts as 499, at info level: the service did nothing wrong. observe also
// detaches the request from the connection's fate and guards its body (see detach).
func (s *Server) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		st := &requestState{}
		// The status and body size of the answer, and whether the client went away.
		sw := httprec.New(goneWriter{ResponseWriter: w, st: st})
		r, undetach := s.detach(w, r, st, start)
		defer undetach()
		defer func() {
			// After a recovered panic that could not be answered (see recoverPanic), the
			// panic goes on to net/http, which cuts the connection; it is still logged here.
			d := time.Since(start)
			status := sw.Status()
			if st.clientGone.Load() {
				status = statusClientGone
			}
			route := s.routeOf(r)
			level := slog.LevelInfo
			if quietRoutes[route] && status < 400 || connOf(r.Context()).wasEvicted() {
				// Evictions come by the hundred under a flood; ConnLimiter logs them in sum.
				level = slog.LevelDebug
			}
			s.log.LogAttrs(r.Context(), level, "request",
				slog.String("method", r.Method), slog.String("path", r.URL.Path),
				slog.String("route", route), slog.Int("status", status),
				slog.Int64("bytes", sw.Bytes()), slog.Duration("duration", d))
			s.metrics.observe(route, status, d)
		}()
		next.ServeHTTP(sw, r)
	})
}

// quietRoutes are polled by machines (probes, scrapers): their successes are logged at debug
// level only, so they do not fill the daily log files.
var quietRoutes = map[string]bool{"GET /health": true, "GET /metrics": true}

// routeOf is the route pattern that answered r, for logs and metric labels; "unmatched" when no
// route did (404, 405, a redirect), so the label set stays bounded.
func (s *Server) routeOf(r *http.Request) string {
	if r.Pattern != "" {
		return r.Pattern
	}
	return "unmatched"
}

// recoverPanic answers a panicking handler with 500 and logs the panic. If the answer had
// already begun, the panic is passed on as http.ErrAbortHandler so the connection is cut.
func (s *Server) recoverPanic(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v)
			}
			sw, ok := answerOf(w)
			started := ok && sw.Started()
			s.writeError(w, r, fmt.Errorf("panic: %v", v))
			if started {
				panic(http.ErrAbortHandler)
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// hashToken makes tokens of any length comparable in constant time.
func hashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// requireToken asks for "Authorization: Bearer <Config.APIToken>" on every endpoint but
// GET /health, when a token is configured.
func (s *Server) requireToken(next http.Handler) http.Handler {
	if s.tokenHash == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			next.ServeHTTP(w, r)
			return
		}
		scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if !strings.EqualFold(scheme, "Bearer") ||
			subtle.ConstantTimeCompare(hashToken(strings.TrimSpace(token)), s.tokenHash) != 1 {
			s.writeError(w, r, errUnauthenticated)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// nameRoutes are the routes whose last path segment is a name, by path prefix.
var nameRoutes = []struct{ prefix, pattern string }{
	{"/load/", "POST /load/{filename}"},
	{"/upload/", "POST /upload/{filename}"},
}

// checkNames rejects (422) a /load/ or /upload/ path whose rest is not a valid name, before
// ServeMux sees it: the mux would answer "/load/.." or "/load/a/../b" with a redirect to the
// cleaned path. r.URL.Path is already percent-decoded, so "%2e%2e", "%2F" and "%00" are caught
// too.
func (s *Server) checkNames(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, nr := range nameRoutes {
			name, ok := strings.CutPrefix(r.URL.Path, nr.prefix)
			if !ok {
				continue
			}
			if err := resources.ValidateName("filename", name, false); err != nil {
				if r.Method == http.MethodPost {
					r.Pattern = nr.pattern // for the log line and the metric label
				}
				s.writeError(w, r, err)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}
