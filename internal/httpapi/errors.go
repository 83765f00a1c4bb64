package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/azaion/loader/internal/cache"
	"github.com/azaion/loader/internal/cdn"
	"github.com/azaion/loader/internal/docker"
	"github.com/azaion/loader/internal/resourceapi"
	"github.com/azaion/loader/internal/resources"
	"github.com/azaion/loader/internal/security"
	"github.com/azaion/loader/internal/unlock"
)

// Errors this package raises itself.
var (
	// errInvalidRequest: a body that is not what the endpoint takes (422); see invalid.
	errInvalidRequest = errors.New("invalid request")
	// errTooLarge: a body past Config.MaxJSONBody (413); see tooLarge.
	errTooLarge = errors.New("request body too large")
	// errLoginRejected: the Resource API refused the credentials given to POST /login (401).
	errLoginRejected = errors.New("the resource API rejected the credentials")
	// errUnauthenticated: a missing or wrong bearer token for the loader's own API (401).
	errUnauthenticated = errors.New("missing or invalid bearer token")
	// errMetricsDisabled: GET /metrics without a Config.Gatherer (404).
	errMetricsDisabled = errors.New("metrics are not enabled")
	// errNoRoute: no endpoint has this path (404).
	errNoRoute = errors.New("no such endpoint")
	// errMethodNotAllowed: the endpoint exists, not with this method (405).
	errMethodNotAllowed = errors.New("method not allowed")
)

// requestError is a problem with the request that this package found. Its message alone is the
// answer's detail, also when it comes back wrapped by a domain package (the upload reader's
// errors return through Resources.Upload).
type requestError struct {
	kind error // errInvalidRequest or errTooLarge
	msg  string
}

func (e *requestError) Error() string { return e.msg }
func (e *requestError) Unwrap() error { return e.kind }

// invalid is an errInvalidRequest (422) saying what is wrong.
func invalid(format string, a ...any) error {
	return &requestError{errInvalidRequest, fmt.Sprintf(format, a...)}
}

// tooLarge is an errTooLarge (413) saying what is too large.
func tooLarge(format string, a ...any) error {
	return &requestError{errTooLarge, fmt.Sprintf(format, a...)}
}

// errorTable maps the errors a caller can act on to a status code, first match wins. detail is
// the fixed text answered; when empty, the answer is the message of this package's own
// requestError, or else err.Error() (domain packages keep secrets out of their errors). An
// error matching no row is answered 500 "internal error" and only the log learns what it was.
var errorTable = []struct {
	err    error
	status int
	detail string
}{
	{errInvalidRequest, http.StatusUnprocessableEntity, ""},
	{resources.ErrInvalidName, http.StatusUnprocessableEntity, ""},
	{errTooLarge, http.StatusRequestEntityTooLarge, ""},
	{errBodyTimeout, http.StatusRequestTimeout, ""},
	{errUnauthenticated, http.StatusUnauthorized, ""},
	{errLoginRejected, http.StatusUnauthorized, "the resource API rejected the credentials"},
	{resourceapi.ErrNotLoggedIn, http.StatusUnauthorized, "not logged in"},
	{resourceapi.ErrUnauthorized, http.StatusUnauthorized, ""},
	{resourceapi.ErrForbidden, http.StatusForbidden, ""},
	{resourceapi.ErrNotFound, http.StatusNotFound, ""},
	{cdn.ErrNotFound, http.StatusNotFound, ""},
	{unlock.ErrArchiveNotFound, http.StatusNotFound, "Encrypted archive not found"},
	{errMetricsDisabled, http.StatusNotFound, ""},
	{errNoRoute, http.StatusNotFound, "Not Found"},
	{errNoDocsFile, http.StatusNotFound, ""},
	{errMethodNotAllowed, http.StatusMethodNotAllowed, "Method Not Allowed"},
	{resourceapi.ErrUnavailable, http.StatusBadGateway, ""},
	{cdn.ErrUnavailable, http.StatusBadGateway, ""},
	{cdn.ErrDenied, http.StatusBadGateway, ""},
	{docker.ErrUnreachable, http.StatusBadGateway, ""},
	{resources.ErrInconsistent, http.StatusBadGateway, "resource is being replaced or inconsistent"},
	{cache.ErrNoSpace, http.StatusInsufficientStorage, ""},
	{security.ErrWrongKey, http.StatusInternalServerError, "decryption failed: wrong key or corrupted data"},
	{security.ErrTruncated, http.StatusInternalServerError, "decryption failed: ciphertext truncated"},
}

// errorStatus is the status and detail answered for err.
func errorStatus(err error) (status int, detail string) {
	for _, row := range errorTable {
		if errors.Is(err, row.err) {
			var re *requestError
			switch {
			case row.detail != "":
				return row.status, row.detail
			case errors.As(err, &re) && re.kind == row.err:
				return row.status, re.msg
			}
			return row.status, err.Error()
		}
	}
	return http.StatusInternalServerError, "internal error"
}

// writeError is the one place a failure becomes an answer: {"detail": "..."} with the status
// from errorTable. If the answer had already begun (a download failing mid-stream) nothing can
// be written any more: the error is only logged, and the short body tells the client. A body
// that was too slow is answered 408 and the connection closed, whatever the handler made of
// the error; a client that went away gets no answer and is logged at info level as 499.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	st := stateOf(r)
	if st.clientGone.Load() {
		level := slog.LevelInfo
		if connOf(r.Context()).wasEvicted() {
			level = slog.LevelDebug
		}
		s.log.LogAttrs(r.Context(), level, "client went away",
			slog.String("method", r.Method), slog.String("route", r.Pattern),
			slog.Int("status", statusClientGone), slog.String("error", err.Error()))
		return
	}
	if sw, ok := answerOf(w); ok && sw.Started() {
		s.log.LogAttrs(r.Context(), slog.LevelError, "response aborted",
			slog.String("method", r.Method), slog.String("route", r.Pattern),
			slog.Int("status", sw.Status()), slog.String("error", err.Error()))
		return
	}
	if st.timedOut.Load() && !errors.Is(err, errBodyTimeout) {
		err = fmt.Errorf("%w: %w", &requestError{errBodyTimeout, "the request body was too slow"}, err)
	}
	status, detail := errorStatus(err)
	level := slog.LevelInfo
	if status >= 500 {
		level = slog.LevelError
	}
	s.log.LogAttrs(r.Context(), level, "request failed",
		slog.String("method", r.Method), slog.String("route", r.Pattern),
		slog.Int("status", status), slog.String("error", err.Error()))
	if errors.Is(err, errUnauthenticated) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="azaion-loader"`)
	}
	if status == http.StatusRequestTimeout {
		// The rest of the body may still trickle in: the connection cannot be reused.
		w.Header().Set("Connection", "close")
	}
	writeJSON(w, status, errorBody{Detail: detail})
}

type errorBody struct {
	Detail string `json:"detail"`
}

// writeJSON answers v as JSON with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil { // only the package's own response types get here
		panic(err)
	}
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(b)
}
