package httpapi_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/azaion/loader/internal/cache"
	"github.com/azaion/loader/internal/cdn"
	"github.com/azaion/loader/internal/httpapi"
	"github.com/azaion/loader/internal/resourceapi"
	"github.com/azaion/loader/internal/resources"
	"github.com/azaion/loader/internal/security"
	"github.com/azaion/loader/internal/unlock"
)

func TestOpenAPI(t *testing.T) {
	e := newEnv(t, nil)
	a := e.do(t, "GET", "/openapi.json", "", nil)
	if a.status != 200 || a.header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /openapi.json: %d %s", a.status, a.header.Get("Content-Type"))
	}
	doc, err := openapi3.NewLoader().LoadFromData(a.body)
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("invalid OpenAPI document: %v", err)
	}

	var documented, served []string
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			documented = append(documented, method+" "+path)
		}
	}
	for _, rt := range e.srv.Routes() {
		served = append(served, rt.Method+" "+rt.Path)
	}
	slices.Sort(documented)
	slices.Sort(served)
	if !slices.Equal(documented, served) {
		t.Errorf("documented routes\n  %v\ndiffer from the served ones\n  %v", documented, served)
	}

	// Every operation documents its success and exactly the failures it can answer.
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			route := method + " " + path
			if op.Responses.Status(200) == nil {
				t.Errorf("%s documents no 200", route)
			}
			if op.Responses.Default() != nil {
				t.Errorf("%s documents a default answer: list the failures instead", route)
			}
			var got []int
			for code := range op.Responses.Map() {
				if code != "200" {
					n, err := strconv.Atoi(code)
					if err != nil {
						t.Errorf("%s documents status %q", route, code)
					}
					got = append(got, n)
				}
			}
			slices.Sort(got)
			want, ok := documentedErrors[route]
			if !ok {
				t.Errorf("%s: no expected failures listed in this test", route)
				continue
			}
			if !slices.Equal(got, want) {
				t.Errorf("%s documents failures %v, want %v", route, got, want)
			}
			for code, ref := range op.Responses.Map() {
				if code == "200" {
					continue
				}
				mt := ref.Value.Content.Get("application/json")
				if mt == nil || mt.Schema == nil || mt.Schema.Value.Properties["detail"] == nil ||
					!slices.Contains(mt.Schema.Value.Required, "detail") {
					t.Errorf("%s %s is not documented as JSON {\"detail\": ...}", route, code)
				}
			}

			// The bearer token: every route but /health asks for it, /health for nothing.
			security := doc.Security
			if op.Security != nil {
				security = *op.Security
			}
			bearer := slices.ContainsFunc(security, func(r openapi3.SecurityRequirement) bool {
				_, ok := r["bearer"]
				return ok && len(r) == 1
			})
			switch {
			case route == "GET /health" && len(security) != 0:
				t.Errorf("%s requires %v, want nothing", route, security)
			case route != "GET /health" && !bearer:
				t.Errorf("%s does not require the bearer token (security %v)", route, security)
			}
		}
	}
	scheme := doc.Components.SecuritySchemes["bearer"]
	if scheme == nil || scheme.Value.Type != "http" || scheme.Value.Scheme != "bearer" {
		t.Errorf("security scheme bearer is not HTTP bearer authentication")
	}
}

// documentedErrors is every failure status each route answers (SPEC §2): its own failures,
// 413 where it reads a JSON body or form fields (Config.MaxJSONBody), 408 where it reads a
// body (Config.BodyTimeout), and 401 on every route
// but GET /health for a missing or wrong bearer token when LOADER_API_TOKEN is set.
var documentedErrors = map[string][]int{
	"GET /health":             nil,
	"GET /status":             {401},
	"POST /login":             {401, 403, 408, 413, 422, 502},
	"POST /load/{filename}":   {401, 403, 404, 408, 413, 422, 500, 502, 507},
	"POST /upload/{filename}": {401, 403, 408, 413, 422, 500, 502, 507},
	"POST /unlock":            {401, 404, 408, 413, 422},
	"GET /unlock/status":      {401},
	"GET /cache":              {401},
	"GET /metrics":            {401, 404},
	"GET /openapi.json":       {401},
	"GET /docs":               {401},
	"GET /docs/{file}":        {401, 404},
}

// TestOpenAPIAnswers makes the server give every answer its document lists, and checks
// each real answer against the document: its status is documented for its route, and its
// content type and body are what the document says. Every documented status must come up,
// so the document lists no failure a route cannot answer.
func TestOpenAPIAnswers(t *testing.T) {
	// The files of GET /docs are text of other kinds than JSON: compared as strings.
	for _, ct := range []string{"text/html", "text/css", "text/javascript"} {
		openapi3filter.RegisterBodyDecoder(ct, openapi3filter.PlainBodyDecoder)
	}
	doc, router := openAPIRouter(t)
	const token = "api-token-Qv27"
	reg := prometheus.NewRegistry()
	e := newEnv(t, func(c *httpapi.Config) {
		c.MaxJSONBody = 256
		c.BodyTimeout = 300 * time.Millisecond
		c.APIToken = token
		c.Registry, c.Gatherer = reg, reg
	})
	noMetrics := newEnv(t, nil)
	credentials := `{"email":"a@b.c","password":"pw"}`
	tooLarge := `{"email":"` + strings.Repeat("a", 300) + `","password":"pw"}`
	loadBody := `{"folder":"models"}`
	loadTooLarge := `{"folder":"models","filename":"` + strings.Repeat("m", 300) + `"}`
	const plain = "the decrypted model"

	seen := make(map[string]map[int]bool)
	type request struct {
		method, path, contentType string
		body                      func() io.Reader
	}
	check := func(env *env, name string, r request, setup func()) {
		t.Helper()
		if setup != nil {
			setup()
		}
		var body io.Reader
		if r.body != nil {
			body = r.body()
		}
		a := env.do(t, r.method, r.path, r.contentType, body)
		req, err := http.NewRequest(r.method, r.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		route, params, err := router.FindRoute(req)
		if err != nil {
			t.Fatalf("%s: %s %s is not in the document: %v", name, r.method, r.path, err)
		}
		in := &openapi3filter.ResponseValidationInput{
			RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route},
			Status:                 a.status,
			Header:                 a.header,
			Body:                   io.NopCloser(bytes.NewReader(a.body)),
			Options:                &openapi3filter.Options{IncludeResponseStatus: true},
		}
		if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
			t.Errorf("%s: %s %s answered %d, not as documented: %v\nbody: %.300s", name, r.method, r.path, a.status, err, a.body)
		}
		key := route.Method + " " + route.Path
		if seen[key] == nil {
			seen[key] = make(map[int]bool)
		}
		seen[key][a.status] = true
	}
	fail := func(err error) func() {
		return func() {
			e.res.open = func(context.Context, string, string) (*resources.Resource, error) { return nil, err }
			e.res.upload = func(context.Context, string, string, io.Reader) error { return err }
			e.auth.err = err
			e.unl.err = err
		}
	}
	ok := func() {
		e.auth.err, e.unl.err = nil, nil
		e.res.open = func(context.Context, string, string) (*resources.Resource, error) {
			return &resources.Resource{Size: int64(len(plain)), ReadCloser: io.NopCloser(strings.NewReader(plain))}, nil
		}
		e.res.upload = func(_ context.Context, _, _ string, r io.Reader) error {
			_, err := io.Copy(io.Discard, r)
			return err
		}
	}
	jsonBody := func(s string) func() io.Reader { return func() io.Reader { return strings.NewReader(s) } }
	// A body that stops after its first bytes, until the test ends.
	stalled := make(chan struct{})
	defer close(stalled)
	slowBody := func() io.Reader { return io.MultiReader(strings.NewReader(`{"em`), waitReader{stalled}) }
	upload := func(fields ...field) (string, func() io.Reader) {
		ct, b := multipartBody(t, fields...)
		return ct, func() io.Reader { return bytes.NewReader(b.Bytes()) }
	}
	uploadCT, uploadBody := upload(field{"folder", "models", false}, field{"data", "bytes", true})
	noFileCT, noFileBody := upload(field{"folder", "models", false})
	bigFieldCT, bigFieldBody := upload(field{"folder", strings.Repeat("f", 300), false}, field{"data", "bytes", true})

	loginReq := request{"POST", "/login", "application/json", jsonBody(credentials)}
	loadReq := request{"POST", "/load/model.onnx", "application/json", jsonBody(loadBody)}
	uploadReq := request{"POST", "/upload/model.onnx", uploadCT, uploadBody}
	unlockReq := request{"POST", "/unlock", "application/json", jsonBody(credentials)}
	for _, tc := range []struct {
		name  string
		req   request
		setup func()
	}{
		{"health", request{"GET", "/health", "", nil}, nil},
		{"status", request{"GET", "/status", "", nil}, nil},
		{"unlock status", request{"GET", "/unlock/status", "", nil}, func() {
			e.unl.status = unlock.Status{State: unlock.StateDecrypting, BytesDone: 10, BytesTotal: 100}
		}},
		{"unlock status error", request{"GET", "/unlock/status", "", nil}, func() {
			e.unl.status = unlock.Status{State: unlock.StateError, Error: "wrong key"}
		}},
		{"metrics", request{"GET", "/metrics", "", nil}, nil},
		{"openapi", request{"GET", "/openapi.json", "", nil}, nil},
		{"docs", request{"GET", "/docs", "", nil}, nil},
		{"docs script", request{"GET", "/docs/swagger-ui-bundle.js", "", nil}, nil},
		{"docs style", request{"GET", "/docs/swagger-ui.css", "", nil}, nil},
		{"docs init", request{"GET", "/docs/init.js", "", nil}, nil},
		{"docs licence", request{"GET", "/docs/LICENSE", "", nil}, nil},
		{"docs unknown file", request{"GET", "/docs/index.html", "", nil}, nil},

		{"login", loginReq, ok},
		{"login rejected", loginReq, fail(resourceapi.ErrUnauthorized)},
		{"login refused", loginReq, fail(resourceapi.ErrForbidden)},
		{"login upstream down", loginReq, fail(resourceapi.ErrUnavailable)},
		{"login bad body", request{"POST", "/login", "application/json", jsonBody(`{}`)}, ok},
		{"login body too large", request{"POST", "/login", "application/json", jsonBody(tooLarge)}, ok},
		{"login body too slow", request{"POST", "/login", "application/json", slowBody}, ok},

		{"load", loadReq, ok},
		{"load not logged in", loadReq, fail(resourceapi.ErrNotLoggedIn)},
		{"load refused", loadReq, fail(resourceapi.ErrForbidden)},
		{"load unknown", loadReq, fail(cdn.ErrNotFound)},
		{"load wrong key", loadReq, fail(security.ErrWrongKey)},
		{"load CDN down", loadReq, fail(cdn.ErrUnavailable)},
		{"load inconsistent", loadReq, fail(resources.ErrInconsistent)},
		{"load no space", loadReq, fail(&cache.SpaceError{Dir: "models", Part: "models/m.big", Need: 20 << 20, Have: 7 << 20})},
		{"load bad body", request{"POST", "/load/model.onnx", "application/json", jsonBody(`{"folder":"../x"}`)}, ok},
		{"load body too large", request{"POST", "/load/model.onnx", "application/json", jsonBody(loadTooLarge)}, ok},
		{"load body too slow", request{"POST", "/load/model.onnx", "application/json", slowBody}, ok},

		{"upload", uploadReq, ok},
		{"upload not logged in", uploadReq, fail(resourceapi.ErrNotLoggedIn)},
		{"upload refused", uploadReq, fail(resourceapi.ErrForbidden)},
		{"upload CDN down", uploadReq, fail(cdn.ErrUnavailable)},
		{"upload cache disk fails", uploadReq, fail(errors.New("write cache: input/output error"))},
		{"upload disk full", uploadReq, fail(&cache.SpaceError{Dir: "models", Part: "models/m.big", Written: 8 << 20, Err: syscall.ENOSPC})},
		{"upload no file", request{"POST", "/upload/model.onnx", noFileCT, noFileBody}, ok},
		{"upload field too large", request{"POST", "/upload/model.onnx", bigFieldCT, bigFieldBody}, ok},
		{"upload body too slow", request{"POST", "/upload/model.onnx", uploadCT, slowBody}, ok},

		{"cache", request{"GET", "/cache", "", nil}, func() {
			e.res.cache = func() (resources.CacheStatus, error) {
				return resources.CacheStatus{Bytes: 5, Max: 10, Parts: []resources.CachePart{
					{Folder: "models", Name: "a", Bytes: 5, Size: 5, State: "cached", LastUsed: time.Now()},
					{Folder: "models", Name: "b", Size: -1, State: "queued"},
				}}, nil
			}
		}},
		{"cache empty", request{"GET", "/cache", "", nil}, func() { e.res.cache = nil }},

		{"unlock", unlockReq, ok},
		{"unlock no archive", unlockReq, fail(unlock.ErrArchiveNotFound)},
		{"unlock bad body", request{"POST", "/unlock", "application/json", jsonBody(`{"email":1}`)}, ok},
		{"unlock body too large", request{"POST", "/unlock", "application/json", jsonBody(tooLarge)}, ok},
		{"unlock body too slow", request{"POST", "/unlock", "application/json", slowBody}, ok},
	} {
		check(e, tc.name, tc.req, tc.setup)
	}
	check(noMetrics, "metrics not enabled", request{"GET", "/metrics", "", nil}, nil)

	// Without the token, every route but /health answers 401.
	e.token = ""
	for _, rt := range e.srv.Routes() {
		path := strings.ReplaceAll(rt.Path, "{filename}", "model.onnx")
		check(e, "no token", request{rt.Method, path, "", nil}, ok)
	}

	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			key := method + " " + path
			for code := range op.Responses.Map() {
				n, _ := strconv.Atoi(code)
				if !seen[key][n] {
					t.Errorf("%s documents %s, but no request in this test got it", key, code)
				}
			}
		}
	}
}

// openAPIDocument is the document the server serves.
func openAPIDocument(t *testing.T) []byte {
	t.Helper()
	a := newEnv(t, nil).do(t, "GET", "/openapi.json", "", nil)
	if a.status != 200 {
		t.Fatalf("GET /openapi.json: %d", a.status)
	}
	return a.body
}

// openAPIRouter is the served document, loaded, and a router that finds an operation of it for
// a request.
func openAPIRouter(t *testing.T) (*openapi3.T, routers.Router) {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(openAPIDocument(t))
	if err != nil {
		t.Fatal(err)
	}
	router, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	return doc, router
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, func(c *httpapi.Config) { c.Registry, c.Gatherer = reg, reg })
	e.do(t, "GET", "/health", "", nil)
	e.do(t, "GET", "/health", "", nil)
	e.postJSON(t, "/login", `{}`)
	a := e.do(t, "GET", "/metrics", "", nil)
	if a.status != 200 {
		t.Fatalf("GET /metrics: %d", a.status)
	}
	for _, want := range []string{
		`azaion_loader_http_requests_total{code="200",route="GET /health"} 2`,
		`azaion_loader_http_requests_total{code="422",route="POST /login"} 1`,
		`azaion_loader_http_request_duration_seconds_count{route="GET /health"} 2`,
	} {
		if !strings.Contains(string(a.body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}

	// A second server on the same registry shares the collectors instead of panicking.
	httpapi.New(httpapi.Config{Auth: e.auth, Resources: e.res, Unlock: e.unl, Registry: reg})
}

func TestMetricsDisabled(t *testing.T) {
	e := newEnv(t, nil)
	wantDetail(t, e.do(t, "GET", "/metrics", "", nil), 404, "metrics are not enabled")
}

// TestNotFound: unknown paths and wrong methods answer JSON as FastAPI did, with the answers
// the document's components describe; a path the mux cleans is still redirected.
func TestNotFound(t *testing.T) {
	doc, _ := openAPIRouter(t)
	e := newEnv(t, nil)
	for _, tc := range []struct {
		method, path string
		status       int
		detail       string
		allow        string
		component    string
	}{
		{"GET", "/nope", 404, "Not Found", "", "NotFound"},
		{"POST", "/load", 404, "Not Found", "", "NotFound"},
		{"GET", "/unlock/", 404, "Not Found", "", "NotFound"},
		{"GET", "/login", 405, "Method Not Allowed", "POST", "MethodNotAllowed"},
		{"DELETE", "/unlock/status", 405, "Method Not Allowed", "GET, HEAD", "MethodNotAllowed"},
		{"PUT", "/upload/m.onnx", 405, "Method Not Allowed", "POST", "MethodNotAllowed"},
	} {
		a := e.do(t, tc.method, tc.path, "", nil)
		if a.status != tc.status || a.header.Get("Allow") != tc.allow {
			t.Errorf("%s %s: %d Allow=%q, want %d Allow=%q", tc.method, tc.path, a.status, a.header.Get("Allow"), tc.status, tc.allow)
			continue
		}
		if d := a.detail(t); d != tc.detail {
			t.Errorf("%s %s: detail %q, want %q", tc.method, tc.path, d, tc.detail)
		}
		ref := doc.Components.Responses[tc.component]
		if ref == nil || ref.Value.Content.Get("application/json") == nil {
			t.Errorf("the document has no JSON response %s", tc.component)
		}
	}
	// ServeMux's redirect of an unclean path is kept: it is no error.
	client := *e.ts.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := client.Get(e.ts.URL + "/unlock/./status")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 3 || resp.Header.Get("Location") != "/unlock/status" {
		t.Errorf("GET /unlock/./status: %d Location=%q, want a redirect to /unlock/status", resp.StatusCode, resp.Header.Get("Location"))
	}
}
