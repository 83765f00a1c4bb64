package httpapi_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/azaion/loader/internal/httpapi"
	"github.com/getkin/kin-openapi/openapi3"
	"github.com/prometheus/client_golang/prometheus"
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

	// Every operation documents its success.
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			if op.Responses.Status(200) == nil {
				t.Errorf("%s %s documents no 200", method, path)
			}
		}
	}
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

// TestNotFound: unknown paths and methods keep ServeMux's answers.
func TestNotFound(t *testing.T) {
	e := newEnv(t, nil)
	if a := e.do(t, "GET", "/nope", "", nil); a.status != 404 {
		t.Errorf("GET /nope: %d", a.status)
	}
	a := e.do(t, "GET", "/login", "", nil)
	if a.status != http.StatusMethodNotAllowed || a.header.Get("Allow") != "POST" {
		t.Errorf("GET /login: %d Allow=%q", a.status, a.header.Get("Allow"))
	}
}
