package httpapi_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/azaion/loader/internal/cdn"
	"github.com/azaion/loader/internal/httpapi"
	"github.com/azaion/loader/internal/resourceapi"
)

// field is one part of a multipart body: a file when file is true.
type field struct {
	name, value string
	file        bool
}

func multipartBody(t *testing.T, fields ...field) (string, *bytes.Buffer) {
	t.Helper()
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	for _, f := range fields {
		var w io.Writer
		var err error
		if f.file {
			w, err = mw.CreateFormFile(f.name, "client-side-name.bin")
		} else {
			w, err = mw.CreateFormField(f.name)
		}
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, f.value)
	}
	mw.Close()
	return mw.FormDataContentType(), &b
}

// recordingUpload is an Upload that reads everything and remembers it.
type recordingUpload struct {
	mu           sync.Mutex
	folder, name string
	data         []byte
	readErr      error
	calls        int
	err          error // answered after reading
}

func (u *recordingUpload) upload(_ context.Context, folder, name string, r io.Reader) error {
	data, err := io.ReadAll(r)
	u.mu.Lock()
	defer u.mu.Unlock()
	u.calls++
	u.folder, u.name, u.data, u.readErr = folder, name, data, err
	if err != nil {
		return fmt.Errorf("upload %s/%s: %w", folder, name, err)
	}
	return u.err
}

func TestUpload(t *testing.T) {
	content := strings.Repeat("model-bytes;", 100_000)
	for _, tc := range []struct {
		desc       string
		fields     []field
		wantFolder string
	}{
		{"data field, folder first", []field{{"folder", "weights", false}, {"data", content, true}}, "weights"},
		{"file field", []field{{"folder", "weights", false}, {"file", content, true}}, "weights"},
		{"no folder", []field{{"data", content, true}}, "models"},
		{"other fields ignored", []field{{"note", "x", false}, {"folder", "w2", false}, {"data", content, true}, {"note2", "y", false}}, "w2"},
		{"late folder equal to the default", []field{{"data", content, true}, {"folder", "models", false}}, "models"},
	} {
		e := newEnv(t, nil)
		rec := &recordingUpload{}
		e.res.upload = rec.upload
		ct, body := multipartBody(t, tc.fields...)
		a := e.do(t, "POST", "/upload/model.onnx", ct, body)
		wantJSON(t, a, 200, `{"status":"ok"}`)
		if rec.folder != tc.wantFolder || rec.name != "model.onnx" || string(rec.data) != content || rec.readErr != nil {
			t.Errorf("%s: Upload(%q, %q, %d bytes, %v)", tc.desc, rec.folder, rec.name, len(rec.data), rec.readErr)
		}
	}
}

func TestUploadInvalid(t *testing.T) {
	for _, tc := range []struct {
		desc        string
		contentType string
		fields      []field
		detail      string
		wantUpload  bool // Upload is called and must fail
	}{
		{"no file", "", []field{{"folder", "models", false}}, "no file", false},
		{"empty form", "", nil, "no file", false},
		{"wrong file field", "", []field{{"upload", "x", true}}, "no file", false},
		{"bad folder", "", []field{{"folder", "../x", false}, {"data", "x", true}}, "folder must be a name", false},
		{"empty folder", "", []field{{"folder", "", false}, {"data", "x", true}}, "folder is empty", false},
		{"folder with CR LF", "", []field{{"folder", "mod\r\nels", false}, {"data", "x", true}}, "folder must not contain control characters", false},
		{"folder not UTF-8", "", []field{{"folder", "mod\xffels", false}, {"data", "x", true}}, "folder is not valid UTF-8", false},
		{"folder with U+202E", "", []field{{"folder", "mod\u202eels", false}, {"data", "x", true}}, "folder must not contain bidirectional", false},
		{"late folder", "", []field{{"data", "x", true}, {"folder", "weights", false}}, "folder field must come before the file", true},
		{"two files", "", []field{{"data", "x", true}, {"file", "y", true}}, "only one file", true},
		{"not multipart", "application/json", nil, "multipart/form-data", false},
	} {
		e := newEnv(t, nil)
		rec := &recordingUpload{}
		e.res.upload = rec.upload
		ct, body := multipartBody(t, tc.fields...)
		if tc.contentType != "" {
			ct = tc.contentType
		}
		wantDetail(t, e.do(t, "POST", "/upload/model.onnx", ct, body), 422, tc.detail)
		if tc.wantUpload != (rec.calls == 1) {
			t.Errorf("%s: Upload called %d times", tc.desc, rec.calls)
		}
		if tc.wantUpload && rec.readErr == nil {
			t.Errorf("%s: Upload read the file without an error: it could have committed", tc.desc)
		}
	}
}

// TestUploadLateFolderThroughCDN: the reader's error keeps its 422 and its detail when the
// upload path wraps it together with another sentinel, as a failed CDN put does.
func TestUploadLateFolderThroughCDN(t *testing.T) {
	e := newEnv(t, nil)
	e.res.upload = func(_ context.Context, _, _ string, r io.Reader) error {
		_, err := io.Copy(io.Discard, r)
		if err == nil {
			t.Error("the late folder did not fail the read")
			return nil
		}
		return fmt.Errorf("upload big part: put models/m.big: %w: %w", cdn.ErrUnavailable, err)
	}
	ct, body := multipartBody(t, field{"data", "x", true}, field{"folder", "weights", false})
	wantJSON(t, e.do(t, "POST", "/upload/m", ct, body), 422, `{"detail":"the folder field must come before the file"}`)
}

// TestUploadNeverFalseSuccess: an Upload that swallows the reader's error or stops reading
// early is not reported as a success.
func TestUploadNeverFalseSuccess(t *testing.T) {
	for _, tc := range []struct {
		desc   string
		read   func(io.Reader)
		fields []field
		status int
	}{
		{"swallowed late folder", func(r io.Reader) { io.Copy(io.Discard, r) },
			[]field{{"data", "x", true}, {"folder", "weights", false}}, 422},
		{"stopped early", func(r io.Reader) { r.Read(make([]byte, 1)) },
			[]field{{"data", strings.Repeat("x", 10000), true}}, 500},
	} {
		e := newEnv(t, nil)
		e.res.upload = func(_ context.Context, _, _ string, r io.Reader) error {
			tc.read(r)
			return nil
		}
		ct, body := multipartBody(t, tc.fields...)
		if a := e.do(t, "POST", "/upload/m", ct, body); a.status != tc.status {
			t.Errorf("%s: status %d, want %d: %s", tc.desc, a.status, tc.status, a.body)
		}
	}
}

func TestUploadErrors(t *testing.T) {
	for _, tc := range []struct {
		err    error
		status int
	}{
		{resourceapi.ErrNotLoggedIn, 401},
		{fmt.Errorf("put small: %w", resourceapi.ErrForbidden), 403},
		{fmt.Errorf("put big: %w", cdn.ErrUnavailable), 502},
		{fmt.Errorf("put small: %w", resourceapi.ErrUnavailable), 502},
		{fmt.Errorf("write cache: disk full"), 500},
	} {
		e := newEnv(t, nil)
		rec := &recordingUpload{err: tc.err}
		e.res.upload = rec.upload
		ct, body := multipartBody(t, field{"data", "x", true})
		if a := e.do(t, "POST", "/upload/model.onnx", ct, body); a.status != tc.status {
			t.Errorf("%v: status %d, want %d", tc.err, a.status, tc.status)
		}
	}
}

func TestUploadTooLargeField(t *testing.T) {
	e := newEnv(t, func(c *httpapi.Config) { c.MaxJSONBody = 1024 })
	ct, body := multipartBody(t, field{"note", strings.Repeat("n", 2048), false}, field{"data", "x", true})
	wantDetail(t, e.do(t, "POST", "/upload/model.onnx", ct, body), 413, `"note"`)
}

// TestUploadStreams: Upload receives the first bytes of the file while the client is still
// sending, so nothing is held back in memory or on disk.
func TestUploadStreams(t *testing.T) {
	e := newEnv(t, nil)
	first := []byte(strings.Repeat("A", 64<<10))
	gotFirst := make(chan struct{})
	var total int64
	e.res.upload = func(_ context.Context, folder, _ string, r io.Reader) error {
		if _, err := io.ReadFull(r, make([]byte, len(first))); err != nil {
			return err
		}
		close(gotFirst)
		n, err := io.Copy(io.Discard, r)
		total = int64(len(first)) + n
		return err
	}

	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	req, _ := http.NewRequest("POST", e.ts.URL+"/upload/big.bin", pr)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	done := make(chan *http.Response, 1)
	go func() {
		resp, err := e.ts.Client().Do(req)
		if err != nil {
			t.Error(err)
		}
		done <- resp
	}()

	mw.WriteField("folder", "models")
	fw, _ := mw.CreateFormFile("data", "big.bin")
	fw.Write(first)
	select {
	case <-gotFirst:
	case <-time.After(10 * time.Second):
		t.Fatal("Upload did not see the first bytes before the body was complete")
	}
	const rest = 8 << 20
	io.Copy(fw, pattern(rest))
	mw.Close()
	pw.Close()

	resp := <-done
	if resp == nil {
		return
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || total != int64(len(first))+rest {
		t.Errorf("status %d, Upload read %d bytes", resp.StatusCode, total)
	}
}
