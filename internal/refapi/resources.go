package refapi

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/azaion/loader/internal/streams"
)

// cdnFile is the name under which the top level (empty folder) serves the CDN settings.
const cdnFile = "cdn.yaml"

// validName reports whether s can be a folder or file name: a name, never a path (SPEC §2's
// rule, which the real API enforces as well by storing names, not paths).
func validName(s string) bool {
	return s != "" && len(s) <= 255 && !strings.HasPrefix(s, ".") && !strings.ContainsAny(s, "/\\\x00")
}

// handleGet serves POST /resources/get[/{folder}]: the file, encrypted with the caller's API
// key (SPEC §3, §4).
func (s *Server) handleGet(w http.ResponseWriter, r *http.Request) {
	user, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	folder := r.PathValue("folder")
	if folder != "" && !validName(folder) {
		writeError(w, http.StatusBadRequest, "invalid folder name")
		return
	}
	f, status, err := readJSON(w, r, "password", "hardware", "fileName")
	if err != nil {
		writeError(w, status, err.Error())
		return
	}
	password, hardware, name := f["password"], f["hardware"], f["fileName"]
	if password == "" || hardware == "" || name == "" {
		writeError(w, http.StatusBadRequest, "password, hardware and fileName are required")
		return
	}
	if !validName(name) {
		writeError(w, http.StatusBadRequest, "invalid file name")
		return
	}
	// 403, not 401: the token is fine, the caller may not have this resource with these
	// credentials. The loader treats both as "log in again once" (SPEC §3).
	if !equal(password, user.Password) {
		writeError(w, http.StatusForbidden, "password mismatch")
		return
	}
	if !s.bindHardware(user.Email, hardware) {
		writeError(w, http.StatusForbidden, "hardware mismatch: this user is bound to another device")
		return
	}
	key := apiKey(user.Email, user.Password, hardware)

	var (
		src  io.Reader
		size int64
	)
	if folder == "" && name == cdnFile {
		b, err := yaml.Marshal(s.cdn)
		if err != nil {
			writeError(w, http.StatusInternalServerError, "cannot render cdn.yaml")
			return
		}
		src, size = bytes.NewReader(b), int64(len(b))
	} else {
		file, err := os.Open(filepath.Join(s.dataDir, folder, name))
		if err != nil {
			writeError(w, http.StatusNotFound, "resource not found")
			return
		}
		defer file.Close()
		fi, err := file.Stat()
		if err != nil || !fi.Mode().IsRegular() {
			writeError(w, http.StatusNotFound, "resource not found")
			return
		}
		// Uploads replace files by rename, so the open file keeps its size; the limit only
		// keeps a file grown in place from overrunning the announced length.
		src, size = io.LimitReader(file, fi.Size()), fi.Size()
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(encryptedSize(size), 10))
	w.WriteHeader(http.StatusOK)
	if err := encryptStream(w, src, key); err != nil {
		// The status is sent; a body shorter than Content-Length makes the client see a
		// broken transfer rather than a wrong file.
		s.log.Warn("resource stream failed", "folder", folder, "file", name, "err", err)
	}
}

// bindHardware binds the user to hardware if unbound and reports whether hardware is the
// bound one.
func (s *Server) bindHardware(email, hardware string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.users[email]
	if u == nil {
		return false
	}
	if u.Hardware == "" {
		u.Hardware = hardware
		s.log.Info("hardware bound", "user", u.ID) // neither the email nor the fingerprint: SPEC §7
		return true
	}
	return u.Hardware == hardware
}

// folderFor authenticates r and returns its {folder}; when ok is false it has answered (401,
// or 400 for a path-like folder name).
func (s *Server) folderFor(w http.ResponseWriter, r *http.Request) (folder string, ok bool) {
	if _, ok := s.authenticate(w, r); !ok {
		return "", false
	}
	folder = r.PathValue("folder")
	if !validName(folder) {
		writeError(w, http.StatusBadRequest, "invalid folder name")
		return "", false
	}
	return folder, true
}

// handleUpload serves POST /resources/{folder}: multipart, file field "data", stored under the
// part's file name. The body is streamed to disk, never held in memory.
func (s *Server) handleUpload(w http.ResponseWriter, r *http.Request) {
	folder, ok := s.folderFor(w, r)
	if !ok {
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, s.maxUpload)
	mr, err := r.MultipartReader()
	if err != nil {
		writeError(w, http.StatusBadRequest, "body must be multipart/form-data")
		return
	}
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			writeError(w, bodyErrorStatus(err), "bad multipart body")
			return
		}
		name := partFileName(part.Header.Get("Content-Disposition"))
		// A part without a file name is a form field to ASP.NET, not a file.
		if part.FormName() != "data" || name == "" {
			continue
		}
		if !validName(name) {
			writeError(w, http.StatusBadRequest, "invalid file name")
			return
		}
		// A read error tells a broken request body (4xx) apart from a failing disk (500).
		body := streams.RecordErr(part)
		if err := s.store(folder, name, body); err != nil {
			if body.Err() != nil { // the client's body broke off or was too big
				writeError(w, bodyErrorStatus(body.Err()), "bad multipart body")
				return
			}
			s.log.Error("store upload", "folder", folder, "file", name, "err", err)
			writeError(w, http.StatusInternalServerError, "cannot store the file")
			return
		}
		w.WriteHeader(http.StatusOK)
		return
	}
	writeError(w, http.StatusBadRequest, `no file in form field "data"`)
}

// partFileName is the file name as the client sent it. multipart.Part.FileName strips
// directories, which would turn "../x" into an acceptable "x"; a path must be refused instead.
func partFileName(disposition string) string {
	_, params, err := mime.ParseMediaType(disposition)
	if err != nil {
		return ""
	}
	return params["filename"]
}

// bodyErrorStatus is the answer to a request body that could not be read: the client's fault.
func bodyErrorStatus(err error) int {
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return http.StatusRequestEntityTooLarge
	}
	return http.StatusBadRequest
}

// PutResource stores plaintext as folder/name, as an upload would; an empty folder is the
// top level. Tests and the try-out binary seed data with it.
func (s *Server) PutResource(folder, name string, plaintext io.Reader) error {
	if (folder != "" && !validName(folder)) || !validName(name) {
		return errors.New("refapi: invalid folder or file name")
	}
	return s.store(folder, name, plaintext)
}

// store writes folder/name atomically: a temp file in the same directory, renamed over the
// target, so a reader sees the old file or the whole new one, never a part. Temp names start
// with a dot, which no resource name can, so they never show up in a listing or a download.
func (s *Server) store(folder, name string, src io.Reader) (err error) {
	dir := filepath.Join(s.dataDir, folder)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".upload-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err = io.Copy(tmp, src); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, name))
}

// handleList serves GET /resources/list/{folder}: the sorted file names, [] for an unknown
// folder.
func (s *Server) handleList(w http.ResponseWriter, r *http.Request) {
	folder, ok := s.folderFor(w, r)
	if !ok {
		return
	}
	entries, err := os.ReadDir(filepath.Join(s.dataDir, folder))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		writeError(w, http.StatusInternalServerError, "cannot list folder")
		return
	}
	// Never null: the client expects an array. ReadDir sorts by name.
	names := []string{}
	for _, e := range entries {
		if e.Type().IsRegular() && validName(e.Name()) {
			names = append(names, e.Name())
		}
	}
	writeJSON(w, http.StatusOK, names)
}

// handleKeyFragment serves GET /binary-split/key-fragment: the raw bytes.
func (s *Server) handleKeyFragment(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.authenticate(w, r); !ok {
		return
	}
	s.mu.Lock()
	b := s.keyFragment
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	w.Write(b)
}
