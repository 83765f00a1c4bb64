package httpapi_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"html"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/azaion/loader/internal/testenv"
)

// TestDocsInBrowser opens GET /docs in a real headless Chromium, lets Swagger UI fetch
// /openapi.json and render, and reads the rendered page: every endpoint of the document must be
// listed with its method. Chromium gets no network beyond the loader (the page's CSP allows
// only its own origin), so this is also the offline device's view.
func TestDocsInBrowser(t *testing.T) {
	chromium := testenv.Chromium(t)
	e := newEnv(t, nil)

	var doc struct {
		Paths map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(e.do(t, "GET", "/openapi.json", "", nil).body, &doc); err != nil {
		t.Fatal(err)
	}
	var want []string
	for path, ops := range doc.Paths {
		for method := range ops {
			want = append(want, strings.ToUpper(method)+" "+path)
		}
	}
	slices.Sort(want)

	dom := renderedDOM(t, chromium, e.ts.URL+"/docs")
	// Swagger UI 5 renders each operation's summary line as
	// <span class="opblock-summary-method">GET</span> ... <span class="opblock-summary-path" data-path="/health">
	op := regexp.MustCompile(`opblock-summary-method">([A-Z]+)</span>.*?opblock-summary-path" data-path="([^"]+)"`)
	var got []string
	for _, m := range op.FindAllStringSubmatch(dom, -1) {
		got = append(got, m[1]+" "+html.UnescapeString(m[2]))
	}
	slices.Sort(got)
	got = slices.Compact(got)
	if !slices.Equal(got, want) {
		t.Errorf("the rendered page lists\n  %v\nthe document has\n  %v\npage (start):\n%.3000s", got, want, dom)
	}
	if !strings.Contains(dom, "Azaion Loader") {
		t.Error("the page does not show the API's title")
	}
	// Every file the page loaded came from the loader, and was logged as answered.
	for _, path := range []string{"/docs", "/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css", "/docs/init.js", "/openapi.json"} {
		if !strings.Contains(e.logs.String(), "path="+path+" ") {
			t.Errorf("the browser did not fetch %s", path)
		}
	}
}

// renderedDOM runs Chromium headless on url until the page has settled and returns its DOM.
func renderedDOM(t *testing.T, chromium, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	// --virtual-time-budget runs the page's timers and waits for its fetches before the DOM is
	// dumped: the page has rendered, not merely loaded.
	cmd := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-default-apps", "--disable-extensions", "--no-first-run", "--mute-audio",
		"--user-data-dir="+t.TempDir(), "--virtual-time-budget=15000", "--dump-dom", url)
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("chromium: %v\n%s", err, stderr)
	}
	return string(out)
}

// TestDocsFiles: the files are sent gzipped to a client that takes gzip and plain to one that
// does not, revalidate by ETag, and nothing outside the page's files is served.
func TestDocsFiles(t *testing.T) {
	e := newEnv(t, nil)
	get := func(path string, header ...string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", e.ts.URL+path, nil)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		// A bare transport: Go's default would ask for gzip and undo it unseen.
		resp, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	plain := get("/docs/swagger-ui-bundle.js")
	body, _ := io.ReadAll(plain.Body)
	if plain.StatusCode != 200 || plain.Header.Get("Content-Encoding") != "" || !strings.Contains(string(body), "SwaggerUIBundle") {
		t.Fatalf("without gzip: %d %q, %d bytes", plain.StatusCode, plain.Header.Get("Content-Encoding"), len(body))
	}
	gz := get("/docs/swagger-ui-bundle.js", "Accept-Encoding", "gzip, deflate")
	zr, err := gzip.NewReader(gz.Body)
	if err != nil || gz.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("with gzip: %q, %v", gz.Header.Get("Content-Encoding"), err)
	}
	unzipped, _ := io.ReadAll(zr)
	if !bytes.Equal(unzipped, body) {
		t.Error("the gzipped file differs from the plain one")
	}
	if n, _ := strconv.Atoi(gz.Header.Get("Content-Length")); n == 0 || n >= len(body)/2 {
		t.Errorf("gzipped Content-Length %d for %d bytes", n, len(body))
	}
	if again := get("/docs/swagger-ui-bundle.js", "If-None-Match", gz.Header.Get("ETag")); again.StatusCode != http.StatusNotModified {
		t.Errorf("revalidation with the ETag: %d, want 304", again.StatusCode)
	}
	page := get("/docs")
	if ct := page.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") || !strings.Contains(page.Header.Get("Content-Security-Policy"), "script-src 'self'") {
		t.Errorf("/docs: Content-Type %q, CSP %q", ct, page.Header.Get("Content-Security-Policy"))
	}
	for _, path := range []string{"/docs/index.html", "/docs/..%2fopenapi.go", "/docs/..%2f..%2fgo.mod", "/docs/nope.js"} {
		if resp := get(path); resp.StatusCode != 404 {
			t.Errorf("GET %s: %d, want 404", path, resp.StatusCode)
		}
	}
	if resp := get("/docs/LICENSE"); resp.StatusCode != 200 {
		t.Errorf("Swagger UI's licence: %d", resp.StatusCode)
	}
}
