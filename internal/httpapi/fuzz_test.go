package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/azaion/loader/internal/httpapi"
	"github.com/azaion/loader/internal/resources"
	"github.com/azaion/loader/internal/unlock"
)

// Fuzz targets for what a client sends: the JSON of /login, /unlock and /load, and the
// multipart body of /upload. Every input must get a documented status with a JSON detail,
// never a panic or a 500, and nothing invalid may reach the domain packages. Seeds are in
// testdata/fuzz; scripts/test.sh runs each target briefly.

// fuzzServer is a Server on fakes, called without a network (fast enough to fuzz).
func fuzzServer(t *testing.T, res *fakeResources, auth *fakeAuth, unl *fakeUnlock) *httpapi.Server {
	t.Helper()
	return httpapi.New(httpapi.Config{Auth: auth, Resources: res, Unlock: unl, MaxJSONBody: 4 << 10,
		Logger: slog.New(slog.DiscardHandler)})
}

// serve answers one request and checks the answer's shape: a failure is JSON {"detail"}.
func serve(t *testing.T, srv http.Handler, req *http.Request, allowed ...int) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, req)
	ok := false
	for _, s := range allowed {
		ok = ok || rec.Code == s
	}
	if !ok {
		t.Fatalf("%s %s: status %d, want one of %v; body %.200s", req.Method, req.URL, rec.Code, allowed, rec.Body.Bytes())
	}
	download := rec.Code == http.StatusOK && strings.HasPrefix(req.URL.Path, "/load/")
	if rec.Code/100 != 3 && !download {
		var v map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
			t.Fatalf("answer %d is not JSON: %.200q", rec.Code, rec.Body.Bytes())
		}
		if _, ok := v["detail"]; rec.Code != http.StatusOK && !ok {
			t.Fatalf("answer %d has no detail: %s", rec.Code, rec.Body.Bytes())
		}
	}
	return rec
}

// FuzzCredentials: the body of POST /login and POST /unlock.
func FuzzCredentials(f *testing.F) {
	f.Add([]byte(`{"email":"a@b.c","password":"pw"}`))
	f.Add([]byte(`{"Email":"a@b.c","password":"pw","extra":[1,{"x":null}]}`))
	f.Add([]byte(`{"email":"a@b.c"}`))
	f.Add([]byte(`{"email":1,"password":"pw"}`))
	f.Add([]byte(`{"email":"\u0000","password":"\ud800"}`))
	f.Add([]byte(`{"email":"a","password":"b"} {}`))
	f.Add([]byte(`null`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, body []byte) {
		auth, unl := &fakeAuth{}, &fakeUnlock{state: unlock.StateAuthenticating}
		srv := fuzzServer(t, &fakeResources{}, auth, unl)
		for _, path := range []string{"/login", "/unlock"} {
			req := httptest.NewRequest("POST", path, bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			rec := serve(t, srv, req, 200, 413, 422)
			email, password := auth.email, auth.password
			if path == "/unlock" {
				email = unl.email
			}
			if rec.Code == http.StatusOK && (email == "" || path == "/login" && password == "") {
				t.Fatalf("%s answered 200 after an empty credential reached the service", path)
			}
			if rec.Code != http.StatusOK && email != "" {
				t.Fatalf("%s answered %d, but the credentials reached the service", path, rec.Code)
			}
			if rec.Code != http.StatusOK && len(password) > 3 && strings.Contains(rec.Body.String(), password) {
				t.Fatalf("the answer repeats the password")
			}
			auth.email, auth.password, unl.email = "", "", ""
		}
	})
}

// FuzzLoad: the name in the path and the JSON body of POST /load/{filename}.
func FuzzLoad(f *testing.F) {
	f.Add("model.onnx", []byte(`{"folder":"models"}`))
	f.Add("model.onnx", []byte(`{"folder":"models","filename":"model.onnx"}`))
	f.Add("model.onnx", []byte(`{"folder":"models","filename":"other"}`))
	f.Add("..", []byte(`{"folder":"models"}`))
	f.Add("a/b", []byte(`{"folder":"../x"}`))
	f.Add("\xff\xfe", []byte(`{"folder":"models"}`))
	f.Add("gpj.\u202eexe", []byte(`{"folder":"mod\r\nels"}`))
	f.Add("m", []byte(`{"folder":5}`))
	f.Fuzz(func(t *testing.T, name string, body []byte) {
		var opened string
		res := &fakeResources{open: func(_ context.Context, folder, n string) (*resources.Resource, error) {
			if resources.ValidateName("folder", folder, false) != nil || resources.ValidateName("filename", n, false) != nil {
				t.Fatalf("Open got an invalid name %q/%q", folder, n)
			}
			opened = n
			return &resources.Resource{Size: 2, ReadCloser: io.NopCloser(strings.NewReader("ok"))}, nil
		}}
		srv := fuzzServer(t, res, &fakeAuth{}, &fakeUnlock{})
		req := httptest.NewRequest("POST", "/", bytes.NewReader(body))
		req.URL = &url.URL{Path: "/load/" + name, RawPath: "/load/" + url.PathEscape(name)}
		req.Header.Set("Content-Type", "application/json")
		rec := serve(t, srv, req, 200, 413, 422)
		if rec.Code == http.StatusOK && (opened != name || rec.Body.String() != "ok") {
			t.Fatalf("200 for %q: opened %q, body %q", name, opened, rec.Body.String())
		}
		if rec.Code != http.StatusOK && opened != "" {
			t.Fatalf("%d, but %q was opened", rec.Code, opened)
		}
	})
}

// FuzzUpload: the multipart body of POST /upload/{filename}. A 200 means Upload read the file
// to its end in a valid folder; any other answer means Upload, if called, saw an error.
func FuzzUpload(f *testing.F) {
	const b = "BOUNDARY"
	f.Add(b, []byte("--BOUNDARY\r\nContent-Disposition: form-data; name=\"folder\"\r\n\r\nmodels\r\n--BOUNDARY\r\nContent-Disposition: form-data; name=\"data\"; filename=\"x\"\r\n\r\nbytes\r\n--BOUNDARY--\r\n"))
	f.Add(b, []byte("--BOUNDARY\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x\"\r\n\r\nbytes\r\n--BOUNDARY\r\nContent-Disposition: form-data; name=\"folder\"\r\n\r\nother\r\n--BOUNDARY--\r\n"))
	f.Add(b, []byte("--BOUNDARY\r\nContent-Disposition: form-data; name=\"data\"; filename=\"x\"\r\n\r\nno end"))
	f.Add(b, []byte("--BOUNDARY\r\nContent-Disposition: form-data; name=\"folder\"\r\n\r\n../x\r\n--BOUNDARY--\r\n"))
	f.Add("", []byte("--\r\n"))
	f.Add("x\"y", []byte("--x\"y--\r\n"))
	f.Fuzz(func(t *testing.T, boundary string, body []byte) {
		var upErr error
		called, committed := false, false
		res := &fakeResources{upload: func(_ context.Context, folder, name string, r io.Reader) error {
			called = true
			if resources.ValidateName("folder", folder, false) != nil {
				t.Fatalf("Upload got an invalid folder %q", folder)
			}
			_, upErr = io.Copy(io.Discard, r)
			committed = upErr == nil
			return upErr
		}}
		srv := fuzzServer(t, res, &fakeAuth{}, &fakeUnlock{})
		req := httptest.NewRequest("POST", "/upload/m.onnx", bytes.NewReader(body))
		req.Header.Set("Content-Type", "multipart/form-data; boundary="+boundary)
		rec := serve(t, srv, req, 200, 413, 422)
		if rec.Code == http.StatusOK && !committed {
			t.Fatal("200 without a file read to its end")
		}
		if rec.Code != http.StatusOK && called && upErr == nil {
			t.Fatalf("%d, but Upload read the file without an error: it could have committed", rec.Code)
		}
	})
}
