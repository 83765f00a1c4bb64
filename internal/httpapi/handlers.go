package httpapi

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/azaion/loader/internal/resourceapi"
	"github.com/azaion/loader/internal/resources"
	"github.com/azaion/loader/internal/unattended"
	"github.com/azaion/loader/internal/unlock"
)

type statusBody struct {
	Status string `json:"status"`
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, statusBody{Status: "healthy"})
	return nil
}

type statusResponse struct {
	Status        string           `json:"status"`
	Authenticated bool             `json:"authenticated"`
	ModelCacheDir string           `json:"modelCacheDir"`
	UserID        string           `json:"userId,omitempty"`
	Role          string           `json:"role,omitempty"`
	Unattended    unattendedStatus `json:"unattended"`
}

// unattendedStatus is the "unattended" block of GET /status (SPEC §10).
type unattendedStatus struct {
	State         unattended.State `json:"state"`
	Attempts      int              `json:"attempts"`
	NextAttemptAt *string          `json:"nextAttemptAt"` // RFC 3339, null unless waiting
	LastError     *string          `json:"lastError"`
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) error {
	resp := statusResponse{Status: "healthy", ModelCacheDir: s.modelCacheDir}
	if sess, ok := s.auth.Session(); ok {
		resp.Authenticated = true
		resp.UserID, resp.Role = sess.UserID, sess.Role
	}
	resp.Unattended.State = unattended.StateOff
	if s.unattend != nil {
		st := s.unattend.Status()
		resp.Unattended = unattendedStatus{State: st.State, Attempts: st.Attempts}
		if !st.NextAttemptAt.IsZero() {
			at := st.NextAttemptAt.UTC().Format("2006-01-02T15:04:05.000Z07:00")
			resp.Unattended.NextAttemptAt = &at
		}
		if st.LastError != "" {
			resp.Unattended.LastError = &st.LastError
		}
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// credentials is the body of POST /login and POST /unlock.
type credentials struct {
	Email    string `json:"email"`
	Password string `json:"password"`
}

func (s *Server) decodeCredentials(w http.ResponseWriter, r *http.Request) (credentials, error) {
	var c credentials
	if err := s.decodeJSON(w, r, &c); err != nil {
		return c, err
	}
	switch {
	case c.Email == "":
		return c, invalid("email is required")
	case c.Password == "":
		return c, invalid("password is required")
	}
	return c, nil
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) error {
	c, err := s.decodeCredentials(w, r)
	if err != nil {
		return err
	}
	if err := s.auth.Login(r.Context(), c.Email, c.Password); err != nil {
		// Rejected credentials get a fixed answer, the upstream's reason goes to the log only.
		// A refusal of accepted credentials (ErrForbidden: cdn.yaml refused because the
		// hardware is bound to another device) is answered 403 with its reason (SPEC §2).
		if errors.Is(err, resourceapi.ErrUnauthorized) {
			return fmt.Errorf("%w: %w", errLoginRejected, err)
		}
		return err
	}
	writeJSON(w, http.StatusOK, statusBody{Status: "ok"})
	return nil
}

// loadRequest is the body of POST /load/{filename}. Filename may be omitted (or empty): the
// path's is used. Folder is required and must be a valid name; an empty or missing folder is
// rejected (422), since the CDN has no bucket without a name.
type loadRequest struct {
	Filename string `json:"filename"`
	Folder   string `json:"folder"`
}

// load streams the decrypted resource with its exact Content-Length. Once the first byte is
// sent the status cannot change: a failure after that is logged and the connection is cut
// short, which the client sees as a body shorter than Content-Length.
func (s *Server) load(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("filename")
	if err := resources.ValidateName("filename", name, false); err != nil {
		return err
	}
	var req loadRequest
	if err := s.decodeJSON(w, r, &req); err != nil {
		return err
	}
	if req.Filename != "" && req.Filename != name {
		return invalid("filename in the body differs from the one in the path")
	}
	if err := resources.ValidateName("folder", req.Folder, false); err != nil {
		return err
	}

	res, err := s.resources.Open(r.Context(), req.Folder, name)
	if err != nil {
		return err
	}
	defer res.Close()

	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.FormatInt(res.Size, 10))
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	// io.Copy with a 32 KiB buffer; w hides the connection's ReadFrom, so nothing else is
	// buffered. A client that goes away makes Write fail and cancels r.Context(), which the
	// Resource's reads watch.
	n, err := io.Copy(w, io.LimitReader(res, res.Size))
	switch {
	case err != nil:
		return fmt.Errorf("stream %s/%s after %d of %d bytes: %w", req.Folder, name, n, res.Size, err)
	case n != res.Size:
		return fmt.Errorf("stream %s/%s: resource ended after %d of %d bytes", req.Folder, name, n, res.Size)
	}
	return nil
}

func (s *Server) startUnlock(w http.ResponseWriter, r *http.Request) error {
	c, err := s.decodeCredentials(w, r)
	if err != nil {
		return err
	}
	state, err := s.unlock.Start(r.Context(), c.Email, c.Password)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct {
		State unlock.State `json:"state"`
	}{state})
	return nil
}

type unlockStatusResponse struct {
	State      unlock.State `json:"state"`
	Error      *string      `json:"error"` // null unless the state is error
	BytesDone  int64        `json:"bytesDone"`
	BytesTotal int64        `json:"bytesTotal"`
}

func (s *Server) unlockStatus(w http.ResponseWriter, r *http.Request) error {
	st := s.unlock.Status()
	resp := unlockStatusResponse{State: st.State, BytesDone: st.BytesDone, BytesTotal: st.BytesTotal}
	if st.Error != "" {
		resp.Error = &st.Error
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

func (s *Server) openAPI(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(openAPIDocument)))
	w.WriteHeader(http.StatusOK)
	_, err := w.Write(openAPIDocument)
	return err
}
