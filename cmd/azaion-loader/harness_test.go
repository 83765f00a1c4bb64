package main

import (
	"bytes"
	"context"

	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/azaion/loader/internal/config"
	"github.com/azaion/loader/internal/hardware"
	"github.com/azaion/loader/internal/refapi"
	"github.com/azaion/loader/internal/security"
	"github.com/azaion/loader/internal/testenv"
)

// The account every end-to-end test logs in with. The password is recognisable so tests can
// assert it never reaches a log.
const (
	testEmail    = "operator@azaion.test"
	testPassword = "Pa55-w0rd-NEVER-LOGGED"
	testUserID   = "42" // the reference API's id of the account, what /status and logs show
)

// envOptions choose the real parts an end-to-end test needs.
type envOptions struct {
	minio         bool          // CDN settings point at the test MinIO (else at a closed port)
	docker        bool          // DOCKER_HOST is the test dockerd (else a socket that does not exist)
	apiToken      string        // LOADER_API_TOKEN
	tokenLifetime time.Duration // of the reference API's JWTs
	upstreamWait  time.Duration // UPSTREAM_TIMEOUT
	cdn           *refapi.CDNSettings
	images        []string
	tag           string
	imagesPath    string
	configure     func(*config.Config)
}

// testEnv is a loader wired exactly as `serve` wires it, in front of the reference Resource API,
// both over real HTTP on loopback.
type testEnv struct {
	t        *testing.T
	ref      *refapi.Server
	refSrv   *httptest.Server
	loader   *loader
	srv      *httptest.Server
	cfg      config.Config
	logs     *testenv.SyncBuffer
	fragment []byte
	minio    testenv.MinIOServer
	cdn      refapi.CDNSettings
}

func newTestEnv(t *testing.T, o envOptions) *testEnv {
	t.Helper()
	e := &testEnv{t: t, logs: &testenv.SyncBuffer{}}
	cdn := refapi.CDNSettings{Host: "http://127.0.0.1:1", DownloaderAccessKey: "k", DownloaderAccessSecret: "s", UploaderAccessKey: "k", UploaderAccessSecret: "s"}
	if o.minio {
		e.minio = testenv.MinIO(t)
		cdn = refapi.CDNSettings{
			Host:                e.minio.URL(),
			DownloaderAccessKey: e.minio.AccessKey, DownloaderAccessSecret: e.minio.SecretKey,
			UploaderAccessKey: e.minio.AccessKey, UploaderAccessSecret: e.minio.SecretKey,
		}
	}
	if o.cdn != nil {
		cdn = *o.cdn
	}
	e.cdn = cdn
	e.fragment = make([]byte, 48)
	rand.Read(e.fragment)
	var err error
	e.ref, err = refapi.New(refapi.Config{
		Users:         []refapi.User{{ID: testUserID, Email: testEmail, Password: testPassword, Role: "CompanionPC"}},
		DataDir:       t.TempDir(),
		JWTSecret:     []byte("test-secret"),
		TokenLifetime: o.tokenLifetime,
		KeyFragment:   e.fragment,
		CDN:           cdn,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.refSrv = httptest.NewServer(e.ref)
	t.Cleanup(e.refSrv.Close)

	dir := t.TempDir()
	e.cfg = config.Config{
		ResourceAPIURL:  e.refSrv.URL,
		ImagesPath:      filepath.Join(dir, "images.enc"),
		APIVersion:      "latest",
		DockerImages:    config.DefaultImages,
		ModelCacheDir:   filepath.Join(dir, "models"),
		LogDir:          filepath.Join(dir, "Logs"),
		LogLevel:        slog.LevelDebug, // the most talkative level is where a secret would leak
		LogFormat:       "text",
		APIToken:        o.apiToken,
		DockerHost:      "unix://" + filepath.Join(dir, "no-docker.sock"),
		UpstreamTimeout: 5 * time.Second,
		CDNStallTimeout: 2 * time.Second,
	}
	if o.upstreamWait > 0 {
		e.cfg.UpstreamTimeout = o.upstreamWait
	}
	if o.docker {
		e.cfg.DockerHost = testenv.DockerHost(t)
	}
	if o.images != nil {
		e.cfg.DockerImages = o.images
	}
	if o.tag != "" {
		e.cfg.APIVersion = o.tag
	}
	if o.imagesPath != "" {
		e.cfg.ImagesPath = o.imagesPath
	}
	if o.configure != nil {
		o.configure(&e.cfg)
	}
	e.loader, err = newLoader(e.cfg, e.logs, "/")
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(e.loader.handler())
	t.Cleanup(func() {
		e.srv.Close()
		e.loader.Close()
	})
	return e
}

// do sends a request to the loader and returns the status and body.
func (e *testEnv) do(method, path string, body io.Reader, header ...string) (int, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	if e.cfg.APIToken != "" && req.Header.Get("Authorization") == "" {
		req.Header.Set("Authorization", "Bearer "+e.cfg.APIToken)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp.StatusCode, b
}

// postJSON posts v (a string is sent as is) to the loader.
func (e *testEnv) postJSON(path string, v any) (int, []byte) {
	e.t.Helper()
	var body []byte
	switch v := v.(type) {
	case string:
		body = []byte(v)
	default:
		body, _ = json.Marshal(v)
	}
	return e.do(http.MethodPost, path, bytes.NewReader(body), "Content-Type", "application/json")
}

// login logs the loader in as the test account and fails the test if that does not work.
func (e *testEnv) login() {
	e.t.Helper()
	code, body := e.postJSON("/login", map[string]string{"email": testEmail, "password": testPassword})
	if code != http.StatusOK {
		e.t.Fatalf("login: %d %s", code, body)
	}
}

// statusBody is GET /status (with the unattended block of SPEC §10).
type statusBody struct {
	Status        string `json:"status"`
	Authenticated bool   `json:"authenticated"`
	ModelCacheDir string `json:"modelCacheDir"`
	UserID        string `json:"userId"`
	Role          string `json:"role"`
	Unattended    struct {
		State         string  `json:"state"`
		Attempts      *int    `json:"attempts"`
		NextAttemptAt *string `json:"nextAttemptAt"`
		LastError     *string `json:"lastError"`
	} `json:"unattended"`
}

func (s statusBody) String() string {
	u := s.Unattended
	str := func(p *string) string {
		if p == nil {
			return "null"
		}
		return *p
	}
	n := -1
	if u.Attempts != nil {
		n = *u.Attempts
	}
	return fmt.Sprintf("status=%s authenticated=%v userId=%q role=%s modelCacheDir=%s unattended{state=%s attempts=%d next=%s lastError=%s}",
		s.Status, s.Authenticated, s.UserID, s.Role, s.ModelCacheDir, u.State, n, str(u.NextAttemptAt), str(u.LastError))
}

func (s statusBody) attempts() int { return *s.Unattended.Attempts }

func (e *testEnv) status() statusBody {
	e.t.Helper()
	code, body := e.do(http.MethodGet, "/status", nil)
	if code != http.StatusOK {
		e.t.Fatalf("/status: %d %s", code, body)
	}
	noSecrets(e.t, []string{string(body)}, testEmail, testPassword) // the user is named by id
	var st statusBody
	if err := json.Unmarshal(body, &st); err != nil {
		e.t.Fatalf("/status body %q: %v", body, err)
	}
	return st
}

// runMain runs the program in-process, as main does, with stdin (none when nil) and getenv as
// its environment, and returns stdout, stderr and the error.
func runMain(stdin []byte, getenv func(string) string, args ...string) ([]byte, string, error) {
	var stdout, stderr bytes.Buffer
	ctx := context.Background()
	if stdin != nil {
		ctx = withStdin(ctx, bytes.NewReader(stdin))
	}
	err := run(ctx, args, getenv, &stdout, &stderr)
	return stdout.Bytes(), stderr.String(), err
}

// detail decodes the loader's error body {"detail": "..."}.
func detail(t *testing.T, body []byte) string {
	t.Helper()
	var v struct {
		Detail *string `json:"detail"`
	}
	if err := json.Unmarshal(body, &v); err != nil || v.Detail == nil {
		t.Fatalf("error body is not {\"detail\": ...}: %q", body)
	}
	return *v.Detail
}

// jwtPattern matches a JSON Web Token (base64url header starting with {" ...).
var jwtPattern = regexp.MustCompile(`eyJ[\w-]+\.[\w-]+\.[\w-]*`)

// assertNoSecrets fails if the loader's logs (stderr and files) hold a secret (see
// checkNoSecrets) or one of extra.
func (e *testEnv) assertNoSecrets(extra ...string) {
	e.t.Helper()
	e.loader.logCloser.Close() // flush the day's file
	e.checkNoSecrets(e.logs.String()+readDir(e.t, e.cfg.LogDir), extra...)
}

// noSecrets fails when any of secrets appears in the texts (a command's outputs, say).
func noSecrets(t *testing.T, texts []string, secrets ...string) {
	t.Helper()
	all := strings.Join(texts, "\n")
	for _, s := range secrets {
		if s != "" && strings.Contains(all, s) {
			t.Errorf("a secret %.4s… appears in an output", s)
		}
	}
}

// checkNoSecrets fails if logs hold any token, or the email, the password, the key fragment, the archive
// key, the API key, the hardware fingerprint or its hash, a CDN secret, or one of extra.
func (e *testEnv) checkNoSecrets(logs string, extra ...string) {
	e.t.Helper()
	hw := hardware.Fingerprint("/")
	secrets := map[string]string{
		"password":          testPassword,
		"email":             testEmail, // a credential too (SPEC §7): users are logged by id
		"key fragment":      fmt.Sprintf("%x", e.fragment),
		"archive key":       fmt.Sprintf("%x", security.ArchiveKey(e.fragment)),
		"API key":           security.APIKey(testEmail, testPassword, security.HardwareHash(hw)),
		"hardware":          hw,
		"hardware hash":     security.HardwareHash(hw),
		"downloader secret": e.cdn.DownloaderAccessSecret,
		"uploader secret":   e.cdn.UploaderAccessSecret,
	}
	for i, s := range extra {
		secrets[fmt.Sprintf("extra secret %d", i)] = s
	}
	for what, s := range secrets {
		if len(s) > 3 && strings.Contains(logs, s) {
			e.t.Errorf("the %s appears in the logs", what)
		}
	}
	if tok := jwtPattern.FindString(logs); tok != "" {
		e.t.Errorf("a token %.12s… appears in the logs", tok)
	}
}

// readDir returns the concatenated contents of the files in dir ("" if it does not exist).
func readDir(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	var b strings.Builder
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		b.Write(data)
	}
	return b.String()
}

// scrape reads the loader's /metrics as Prometheus text and returns every sample by its
// series name with labels sorted, e.g. `x_total{code="200",route="GET /health"}`.
func scrape(t *testing.T, e *testEnv) map[string]float64 {
	t.Helper()
	code, body := e.do(http.MethodGet, "/metrics", nil)
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	return parseMetrics(t, body)
}

// parseMetrics reads Prometheus text as scrape returns it.
func parseMetrics(t testing.TB, body []byte) map[string]float64 {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("/metrics is not Prometheus text format: %v", err)
	}
	out := make(map[string]float64)
	for name, f := range families {
		for _, m := range f.GetMetric() {
			key := name
			if len(m.GetLabel()) > 0 {
				var parts []string
				for _, l := range m.GetLabel() {
					parts = append(parts, l.GetName()+`="`+l.GetValue()+`"`)
				}
				key += "{" + strings.Join(parts, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				out[key] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[key] = m.GetGauge().GetValue()
			}
		}
	}
	return out
}
