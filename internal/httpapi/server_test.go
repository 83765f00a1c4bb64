package httpapi_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/azaion/loader/internal/cdn"
	"github.com/azaion/loader/internal/docker"
	"github.com/azaion/loader/internal/httpapi"
	"github.com/azaion/loader/internal/resourceapi"
	"github.com/azaion/loader/internal/resources"
	"github.com/azaion/loader/internal/security"
	"github.com/azaion/loader/internal/unlock"
)

type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) detail(t *testing.T) string {
	t.Helper()
	var v struct {
		Detail *string `json:"detail"`
	}
	if err := json.Unmarshal(a.body, &v); err != nil || v.Detail == nil {
		t.Fatalf("body %q is not {\"detail\": ...}: %v", a.body, err)
	}
	if ct := a.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	return *v.Detail
}

func (e *env) do(t *testing.T, method, path, contentType string, body io.Reader) answer {
	t.Helper()
	req, err := http.NewRequest(method, e.ts.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if e.token != "" {
		req.Header.Set("Authorization", "Bearer "+e.token)
	}
	resp, err := e.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, path, err)
	}
	return answer{resp.StatusCode, resp.Header, b}
}

func (e *env) postJSON(t *testing.T, path, body string) answer {
	t.Helper()
	return e.do(t, http.MethodPost, path, "application/json", strings.NewReader(body))
}

func wantJSON(t *testing.T, a answer, status int, want string) {
	t.Helper()
	if a.status != status {
		t.Fatalf("status = %d, want %d; body %s", a.status, status, a.body)
	}
	var got, exp any
	if err := json.Unmarshal(a.body, &got); err != nil {
		t.Fatalf("body %q: %v", a.body, err)
	}
	if err := json.Unmarshal([]byte(want), &exp); err != nil {
		t.Fatal(err)
	}
	g, _ := json.Marshal(got)
	x, _ := json.Marshal(exp)
	if !bytes.Equal(g, x) {
		t.Errorf("body = %s, want %s", g, x)
	}
}

func wantDetail(t *testing.T, a answer, status int, detailPart string) {
	t.Helper()
	if a.status != status {
		t.Fatalf("status = %d, want %d; body %s", a.status, status, a.body)
	}
	if d := a.detail(t); !strings.Contains(d, detailPart) {
		t.Errorf("detail = %q, want it to contain %q", d, detailPart)
	}
}

func TestHealth(t *testing.T) {
	e := newEnv(t, nil)
	wantJSON(t, e.do(t, "GET", "/health", "", nil), 200, `{"status":"healthy"}`)
}

func TestStatus(t *testing.T) {
	e := newEnv(t, nil)
	wantJSON(t, e.do(t, "GET", "/status", "", nil), 200,
		`{"status":"healthy","authenticated":false,"modelCacheDir":"/var/cache/models",`+unattendedOff+`}`)

	e.auth.session = &httpapi.Session{UserID: "42", Role: "CompanionPC"}
	wantJSON(t, e.do(t, "GET", "/status", "", nil), 200,
		`{"status":"healthy","authenticated":true,"modelCacheDir":"/var/cache/models","userId":"42","role":"CompanionPC",`+unattendedOff+`}`)
}

func TestLogin(t *testing.T) {
	e := newEnv(t, nil)
	wantJSON(t, e.postJSON(t, "/login", `{"email":"op@example.com","password":"pw","extra":1}`), 200, `{"status":"ok"}`)
	if e.auth.email != "op@example.com" || e.auth.password != "pw" {
		t.Errorf("Login got %q/%q", e.auth.email, e.auth.password)
	}
}

// Bodies that POST /login and POST /unlock both reject with 422, and a part of the detail.
var badCredentials = []struct{ body, detail string }{
	{``, "empty"},
	{`   `, "empty"},
	{`{"email":`, "not valid JSON"},
	{`not json`, "not valid JSON"},
	{`{"email":"a","password":"b"}{}`, "not valid JSON"},
	{`[]`, "JSON object"},
	{`"text"`, "JSON object"},
	{`{"email":1,"password":"b"}`, `"email" must be a string`},
	{`{"email":"a","password":true}`, `"password" must be a string`},
	{`{}`, "email is required"},
	{`null`, "email is required"},
	{`{"password":"b"}`, "email is required"},
	{`{"email":"","password":"b"}`, "email is required"},
	{`{"email":"a"}`, "password is required"},
	{`{"email":"a","password":""}`, "password is required"},
}

func TestLoginInvalid(t *testing.T) {
	e := newEnv(t, nil)
	for _, tc := range badCredentials {
		for _, path := range []string{"/login", "/unlock"} {
			wantDetail(t, e.postJSON(t, path, tc.body), 422, tc.detail)
		}
	}
	if e.auth.email != "" || e.unl.email != "" {
		t.Error("an invalid body reached Login or Start")
	}
}

func TestLoginUpstream(t *testing.T) {
	for _, tc := range []struct {
		err    error
		status int
		detail string
	}{
		{fmt.Errorf("login: %w (status 400)", resourceapi.ErrUnauthorized), 401, "the resource API rejected the credentials"},
		// Accepted credentials, but cdn.yaml refused to this device: 403 with the reason (SPEC §2).
		{fmt.Errorf("login: fetch cdn.yaml: %w (403 Forbidden: hardware mismatch)", resourceapi.ErrForbidden), 403,
			"login: fetch cdn.yaml: resource API refused the request (403 Forbidden: hardware mismatch)"},
		{fmt.Errorf("login: %w: dial tcp: refused", resourceapi.ErrUnavailable), 502, "login: resource API unreachable or broken: dial tcp: refused"},
		{errors.New("something odd"), 500, "internal error"},
	} {
		e := newEnv(t, nil)
		e.auth.err = tc.err
		a := e.postJSON(t, "/login", `{"email":"a@b.c","password":"pw"}`)
		wantDetail(t, a, tc.status, tc.detail)
		if d := a.detail(t); d != tc.detail {
			t.Errorf("%v: detail = %q, want exactly %q", tc.err, d, tc.detail)
		}
	}
}

// TestErrorTable checks every mapped error through the one endpoint that can meet them all.
func TestErrorTable(t *testing.T) {
	for _, tc := range []struct {
		err    error
		status int
		detail string
	}{
		{resourceapi.ErrNotLoggedIn, 401, "not logged in"},
		{fmt.Errorf("get x: %w", resourceapi.ErrNotLoggedIn), 401, "not logged in"},
		{fmt.Errorf("get x: %w", resourceapi.ErrUnauthorized), 401, "get x: resource API rejected the credentials"},
		{fmt.Errorf("get x: %w", resourceapi.ErrForbidden), 403, "get x: resource API refused the request"},
		{fmt.Errorf("get x: %w", resourceapi.ErrNotFound), 404, "get x: resource not found on the resource API"},
		{fmt.Errorf("get x.big: %w", cdn.ErrNotFound), 404, "get x.big: object not found on the CDN"},
		{fmt.Errorf("get x: %w", resourceapi.ErrUnavailable), 502, "get x: resource API unreachable or broken"},
		{fmt.Errorf("get x.big: %w", cdn.ErrUnavailable), 502, "get x.big: CDN unreachable or broken"},
		{fmt.Errorf("get x.big: %w", cdn.ErrDenied), 502, "get x.big: CDN refused the credentials"},
		{fmt.Errorf("decrypt x: %w", security.ErrWrongKey), 500, "decryption failed: wrong key or corrupted data"},
		{fmt.Errorf("decrypt x: %w", security.ErrTruncated), 500, "decryption failed: ciphertext truncated"},
		{fmt.Errorf("open x: %w", resources.ErrInvalidName), 422, "open x: invalid name"},
		{fmt.Errorf("check: %w", docker.ErrUnreachable), 502, "check: docker daemon unreachable"},
		{unlock.ErrArchiveNotFound, 404, "Encrypted archive not found"},
		{errors.New("open /secret/path: permission denied"), 500, "internal error"},
	} {
		e := newEnv(t, nil)
		e.res.open = func(context.Context, string, string) (*resources.Resource, error) { return nil, tc.err }
		a := e.postJSON(t, "/load/model.onnx", `{"folder":"models"}`)
		if a.status != tc.status {
			t.Errorf("%v: status = %d, want %d", tc.err, a.status, tc.status)
			continue
		}
		if d := a.detail(t); d != tc.detail {
			t.Errorf("%v: detail = %q, want %q", tc.err, d, tc.detail)
		}
	}
}

// pattern is a reader of n deterministic bytes.
func pattern(n int64) io.Reader {
	return io.LimitReader(&repeat{}, n)
}

type repeat struct{ i byte }

func (r *repeat) Read(p []byte) (int, error) {
	for k := range p {
		p[k] = r.i
		r.i = r.i*31 + 7
	}
	return len(p), nil
}

func TestLoad(t *testing.T) {
	const size = 5<<20 + 123
	want, _ := io.ReadAll(pattern(size))
	for _, body := range []string{
		`{"folder":"models"}`,
		`{"filename":"model.onnx","folder":"models"}`,
		`{"filename":"","folder":"models"}`,
	} {
		e := newEnv(t, nil)
		body := body
		rec := newCloseRecorder(pattern(size))
		var gotFolder, gotName string
		e.res.open = func(_ context.Context, folder, name string) (*resources.Resource, error) {
			gotFolder, gotName = folder, name
			return &resources.Resource{Size: size, ReadCloser: rec}, nil
		}
		a := e.postJSON(t, "/load/model.onnx", body)
		if a.status != 200 {
			t.Fatalf("%s: status %d: %s", body, a.status, a.body)
		}
		if cl := a.header.Get("Content-Length"); cl != fmt.Sprint(size) {
			t.Errorf("Content-Length = %q, want %d", cl, size)
		}
		if ct := a.header.Get("Content-Type"); ct != "application/octet-stream" {
			t.Errorf("Content-Type = %q", ct)
		}
		if !bytes.Equal(a.body, want) {
			t.Errorf("body differs: got %d bytes, want %d", len(a.body), len(want))
		}
		if gotFolder != "models" || gotName != "model.onnx" {
			t.Errorf("Open(%q, %q)", gotFolder, gotName)
		}
		select {
		case <-rec.closed:
		case <-time.After(5 * time.Second):
			t.Error("resource not closed")
		}
	}
}

func TestLoadInvalid(t *testing.T) {
	e := newEnv(t, nil)
	for _, tc := range []struct{ body, detail string }{
		{`{"filename":"other.onnx","folder":"models"}`, "differs"},
		{`{"filename":"model.onnx"}`, "folder is empty"},
		{`{"folder":""}`, "folder is empty"},
		{`{"folder":"../etc"}`, "folder must be a name"},
		{`{"folder":".git"}`, "folder must not start with a dot"},
		{`{"folder":"a\u0000b"}`, "folder must be a name"},
		{`{"folder":"` + strings.Repeat("f", 256) + `"}`, "longer than 255"},
		{`{"folder":"mod\r\nels"}`, "folder must not contain control characters"},
		{`{"folder":"mod\u202eels"}`, "folder must not contain bidirectional formatting characters"},
		{`{"folder":5}`, `"folder" must be a string`},
		{``, "empty"},
		{`{`, "not valid JSON"},
	} {
		wantDetail(t, e.postJSON(t, "/load/model.onnx", tc.body), 422, tc.detail)
	}
	if n := e.res.Calls(); n != 0 {
		t.Errorf("Resources called %d times", n)
	}
}

// TestLoadShortResource: a resource that ends before Size cuts the answer short, so the
// client sees an error rather than a complete-looking file.
func TestLoadShortResource(t *testing.T) {
	e := newEnv(t, nil)
	e.res.open = func(context.Context, string, string) (*resources.Resource, error) {
		return &resources.Resource{Size: 1 << 20, ReadCloser: newCloseRecorder(pattern(1000))}, nil
	}
	resp, err := e.ts.Client().Post(e.ts.URL+"/load/m", "application/json", strings.NewReader(`{"folder":"f"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Error("reading a short answer did not fail")
	}
}

// TestLoadClientGone: a client that hangs up mid-download stops the copy and the resource is
// closed, both when the resource has bytes at hand and when its Read waits (on the CDN) and
// then goes on: the write of those bytes fails. (The request's context is not what ends it:
// a client that only half-closed still wants the rest, see TestHalfClosedClientGetsItsAnswer.)
func TestLoadClientGone(t *testing.T) {
	for _, blocking := range []bool{false, true} {
		t.Run(fmt.Sprint("blocking=", blocking), func(t *testing.T) {
			e := newEnv(t, nil)
			rec := newCloseRecorder(nil)
			resume := make(chan struct{})
			e.res.open = func(ctx context.Context, _, _ string) (*resources.Resource, error) {
				var r io.Reader = pattern(1 << 40)
				if blocking {
					r = io.MultiReader(pattern(1<<20), waitReader{resume}, pattern(1<<40))
				}
				rec.Reader = r
				return &resources.Resource{Size: 1 << 40, ReadCloser: rec}, nil
			}
			resp, err := e.ts.Client().Post(e.ts.URL+"/load/m", "application/json", strings.NewReader(`{"folder":"f"}`))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.CopyN(io.Discard, resp.Body, 1<<20); err != nil {
				t.Fatal(err)
			}
			resp.Body.Close() // mid-body: the transport drops the connection
			close(resume)
			select {
			case <-rec.closed:
			case <-time.After(10 * time.Second):
				t.Fatal("resource not closed after the client went away")
			}
		})
	}
}

// waitReader is a Read that waits until ch is closed, as a stalled CDN download does, then
// ends its part of a MultiReader.
type waitReader struct{ ch chan struct{} }

func (w waitReader) Read([]byte) (int, error) {
	<-w.ch
	return 0, io.EOF
}

// rawRequest sends path as is: Go's client would clean or re-escape it.
func rawRequest(t *testing.T, addr, method, path, body string) (int, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: loader\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		method, path, len(body), body)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestNamesBeforeMux(t *testing.T) {
	e := newEnv(t, nil)
	addr := strings.TrimPrefix(e.ts.URL, "http://")
	long := strings.Repeat("x", 300)
	for _, tc := range []struct{ path, detail string }{
		{"..", "must not contain"},
		{"%2e%2e", "must not contain"},
		{"%2E%2E", "must not contain"},
		{".", "must not start with a dot"},
		{"a%2Fb", "must be a name"},
		{"..%2Fx", "must be a name"},
		{"a/../b", "must be a name"},
		{"../upload/x", "must be a name"},
		{"a%5Cb", "must be a name"},
		{".hidden", "must not start with a dot"},
		{"a%00b", "must be a name"},
		{"", "filename is empty"},
		{long, "longer than 249"},
		{strings.Repeat("y", 250), "longer than 249"}, // NAME.small would pass 255 bytes upstream
		{"%ff%fe", "not valid UTF-8"},
		{"%c0%ae", "not valid UTF-8"},
		{"%c0%ae%c0%ae", "not valid UTF-8"},
		{"a%0d%0ab", "control characters"},
		{"a%0ab", "control characters"},
		{"a%09b", "control characters"},
		{"a%7f", "control characters"},
		{"a%c2%85", "control characters"},
		{"gpj.%e2%80%aeexe", "bidirectional formatting"},
		{"a%e2%81%a6b", "bidirectional formatting"},
		{"a%e2%80%8fb", "bidirectional formatting"},
	} {
		for _, prefix := range []string{"/load/", "/upload/"} {
			status, body := rawRequest(t, addr, "POST", prefix+tc.path, `{"folder":"models"}`)
			if status != 422 || !strings.Contains(body, tc.detail) || !strings.Contains(body, `"detail"`) {
				t.Errorf("POST %s%s: %d %s, want 422 with %q", prefix, tc.path, status, body, tc.detail)
			}
		}
	}
	if n := e.res.Calls(); n != 0 {
		t.Errorf("Resources called %d times", n)
	}
	// A valid name with an escaped character still reaches the handler, unescaped.
	e.res.open = func(_ context.Context, _, name string) (*resources.Resource, error) {
		if name != "my model.onnx" {
			t.Errorf("name = %q", name)
		}
		return &resources.Resource{Size: 2, ReadCloser: newCloseRecorder(strings.NewReader("ok"))}, nil
	}
	if status, body := rawRequest(t, addr, "POST", "/load/my%20model.onnx", `{"folder":"models"}`); status != 200 || body != "ok" {
		t.Errorf("valid escaped name: %d %q", status, body)
	}
}

func TestUnlock(t *testing.T) {
	e := newEnv(t, nil)
	for _, st := range []unlock.State{unlock.StateAuthenticating, unlock.StateReady, unlock.StateDecrypting} {
		e.unl.state = st
		wantJSON(t, e.postJSON(t, "/unlock", `{"email":"a@b.c","password":"pw"}`), 200, `{"state":"`+string(st)+`"}`)
	}
	if e.unl.email != "a@b.c" {
		t.Errorf("Start got email %q", e.unl.email)
	}

	e.unl.err = fmt.Errorf("unlock: %w", unlock.ErrArchiveNotFound)
	wantJSON(t, e.postJSON(t, "/unlock", `{"email":"a@b.c","password":"pw"}`), 404, `{"detail":"Encrypted archive not found"}`)
}

func TestUnlockStatus(t *testing.T) {
	e := newEnv(t, nil)
	e.unl.status = unlock.Status{State: unlock.StateIdle}
	wantJSON(t, e.do(t, "GET", "/unlock/status", "", nil), 200, `{"state":"idle","error":null,"bytesDone":0,"bytesTotal":0}`)
	e.unl.status = unlock.Status{State: unlock.StateDecrypting, BytesDone: 10, BytesTotal: 100}
	wantJSON(t, e.do(t, "GET", "/unlock/status", "", nil), 200, `{"state":"decrypting","error":null,"bytesDone":10,"bytesTotal":100}`)
	e.unl.status = unlock.Status{State: unlock.StateError, Error: "docker daemon unreachable", BytesDone: 10, BytesTotal: 100}
	wantJSON(t, e.do(t, "GET", "/unlock/status", "", nil), 200, `{"state":"error","error":"docker daemon unreachable","bytesDone":10,"bytesTotal":100}`)
}

func TestBodyTooLarge(t *testing.T) {
	e := newEnv(t, nil)
	big := `{"email":"` + strings.Repeat("a", 2<<20) + `","password":"pw"}`
	for _, path := range []string{"/login", "/unlock", "/load/model.onnx"} {
		wantDetail(t, e.postJSON(t, path, big), 413, "over the limit of 1048576 bytes")
	}
	e2 := newEnv(t, func(c *httpapi.Config) { c.MaxJSONBody = 64 })
	wantDetail(t, e2.postJSON(t, "/login", `{"email":"`+strings.Repeat("a", 100)+`","password":"pw"}`), 413, "over the limit of 64 bytes")
	wantJSON(t, e2.postJSON(t, "/login", `{"email":"a","password":"pw"}`), 200, `{"status":"ok"}`)
}

func TestToken(t *testing.T) {
	const token = "tok-3f9a-secret"
	e := newEnv(t, func(c *httpapi.Config) { c.APIToken = token })
	e.token = "" // send none unless asked

	send := func(method, path, auth string) *http.Response {
		req, _ := http.NewRequest(method, e.ts.URL+path, strings.NewReader("{}"))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := e.ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	for _, rt := range e.srv.Routes() {
		path := strings.Replace(rt.Path, "{filename}", "m.onnx", 1)
		if rt.Path == "/health" {
			if resp := send(rt.Method, path, ""); resp.StatusCode != 200 {
				t.Errorf("/health without a token: %d", resp.StatusCode)
			}
			continue
		}
		for _, auth := range []string{"", "Bearer wrong", "Basic " + token, token, "Bearer " + token + "x", "Bearer"} {
			resp := send(rt.Method, path, auth)
			if resp.StatusCode != 401 {
				t.Errorf("%s %s with %q: %d, want 401", rt.Method, path, auth, resp.StatusCode)
			}
			if !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("%s %s: WWW-Authenticate = %q", rt.Method, path, resp.Header.Get("WWW-Authenticate"))
			}
		}
		if resp := send(rt.Method, path, "Bearer "+token); resp.StatusCode == 401 {
			t.Errorf("%s %s with the token: 401", rt.Method, path)
		}
	}
	// A raw bad name is refused for want of a token first: names are not probed anonymously.
	if status, _ := rawRequest(t, strings.TrimPrefix(e.ts.URL, "http://"), "POST", "/load/..", "{}"); status != 401 {
		t.Errorf("raw /load/.. without a token: %d, want 401", status)
	}
	if strings.Contains(e.logs.String(), token) {
		t.Error("the log holds the token")
	}
}

func TestLogHasNoSecrets(t *testing.T) {
	const password, token = "pw-7c1e-hunter2", "tok-b52d-secret"
	e := newEnv(t, func(c *httpapi.Config) { c.APIToken = token })
	e.postJSON(t, "/login", `{"email":"a@b.c","password":"`+password+`"}`)
	e.auth.err = fmt.Errorf("login: %w", resourceapi.ErrUnauthorized)
	e.postJSON(t, "/login", `{"email":"a@b.c","password":"`+password+`"}`)
	e.postJSON(t, "/login", `{"email":"a@b.c","password":"`+password+`"`)   // truncated JSON
	e.postJSON(t, "/login", `{"email":"a@b.c","password":"`+password+`"}x`) // trailing junk
	e.postJSON(t, "/unlock", `{"email":"a@b.c","password":"`+password+`"}`)
	e.postJSON(t, "/unlock", `{"email":1,"password":"`+password+`"}`)
	logs := e.logs.String()
	if !strings.Contains(logs, `route="POST /login"`) || !strings.Contains(logs, "status=401") {
		t.Fatalf("request lines missing from the log:\n%s", logs)
	}
	for _, secret := range []string{password, token} {
		if strings.Contains(logs, secret) {
			t.Errorf("the log holds %q:\n%s", secret, logs)
		}
	}
}

func TestRequestLog(t *testing.T) {
	e := newEnv(t, nil)
	e.do(t, "GET", "/health", "", nil)
	e.do(t, "GET", "/nowhere", "", nil)
	logs := e.logs.String()
	for _, want := range []string{
		`msg=request method=GET path=/health route="GET /health" status=200 bytes=21 duration=`,
		`path=/nowhere route=unmatched status=404`,
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
}

func TestPanic(t *testing.T) {
	e := newEnv(t, nil)
	e.auth.panics = true
	wantJSON(t, e.do(t, "GET", "/status", "", nil), 500, `{"detail":"internal error"}`)
	if !strings.Contains(e.logs.String(), "panic: boom") {
		t.Errorf("panic not logged:\n%s", e.logs.String())
	}
	wantJSON(t, e.do(t, "GET", "/health", "", nil), 200, `{"status":"healthy"}`)
}
