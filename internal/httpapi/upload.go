package httpapi

import (
	"fmt"
	"io"
	"mime/multipart"
	"net/http"

	"github.com/azaion/loader/internal/resources"
)

// upload streams the file part of a multipart body to Resources.Upload: nothing is held in
// memory or spooled to disk here.
//
// The file is the part named "data" (or "file"); its own file name is ignored, the path's is
// used. The folder is the field "folder", DefaultUploadFolder when absent. Because the file is
// streamed as it arrives, the folder must be known before it: clients send "folder" first (curl
// keeps the order of its -F options; Python's requests and httpx put form fields before files).
// A "folder" field after the file that names a different folder than the one used, or a second
// file, makes the upload fail with 422 before Upload sees the end of the file, so nothing is
// committed.
func (s *Server) upload(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("filename")
	if err := resources.ValidateName("filename", name, false); err != nil {
		return err
	}
	mr, err := r.MultipartReader()
	if err != nil {
		return invalid("the request body must be multipart/form-data")
	}
	folder := DefaultUploadFolder
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			return invalid("no file: send it in the form field \"data\"")
		}
		if err != nil {
			return bodyError(err, "malformed multipart body")
		}
		switch part.FormName() {
		case "folder":
			if folder, err = s.readField(part); err != nil {
				return err
			}
			if err := resources.ValidateName("folder", folder, false); err != nil {
				return err
			}
		case "data", "file":
			body := &filePart{s: s, mr: mr, part: part, folder: folder}
			if err := s.resources.Upload(r.Context(), folder, name, body); err != nil {
				return err
			}
			if body.err != io.EOF {
				// Upload ignored a read error or stopped early: this is no success.
				return fmt.Errorf("upload %s/%s: Upload returned before the end of the file: %w", folder, name, body.err)
			}
			writeJSON(w, http.StatusOK, statusBody{Status: "ok"})
			return nil
		default:
			if err := s.skipField(part); err != nil {
				return err
			}
		}
	}
}

// readField reads a small form field: at most s.maxJSONBody bytes, else errTooLarge.
func (s *Server) readField(p *multipart.Part) (string, error) {
	b, err := io.ReadAll(io.LimitReader(p, s.maxJSONBody+1))
	switch {
	case err != nil:
		return "", bodyError(err, "malformed multipart body")
	case int64(len(b)) > s.maxJSONBody:
		return "", tooLarge("form field %q is over the limit of %d bytes", p.FormName(), s.maxJSONBody)
	}
	return string(b), nil
}

// skipField discards a form field the endpoint does not take.
func (s *Server) skipField(p *multipart.Part) error {
	_, err := s.readField(p)
	return err
}

// filePart is the reader Upload gets: the file part, and at its end a look at the rest of the
// body, so a late "folder" field or a second file fails the upload instead of being ignored.
type filePart struct {
	s      *Server
	mr     *multipart.Reader
	part   *multipart.Part
	folder string
	err    error // sticky: once set, every Read returns it
}

func (f *filePart) Read(p []byte) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	n, err := f.part.Read(p)
	switch {
	case err == io.EOF:
		err = f.checkRest()
	case err != nil:
		err = bodyError(err, "reading the file")
	}
	f.err = err
	return n, err
}

// checkRest reads the parts after the file. io.EOF means the upload may be committed.
func (f *filePart) checkRest() error {
	for {
		part, err := f.mr.NextPart()
		if err == io.EOF {
			return io.EOF
		}
		if err != nil {
			return bodyError(err, "malformed multipart body")
		}
		switch part.FormName() {
		case "folder":
			v, err := f.s.readField(part)
			if err != nil {
				return err
			}
			if v != f.folder {
				return invalid("the folder field must come before the file")
			}
		case "data", "file":
			return invalid("only one file per upload")
		default:
			if err := f.s.skipField(part); err != nil {
				return err
			}
		}
	}
}
