package main

import (
	"bufio"
	"bytes"
	crand "crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/azaion/loader/internal/refapi"
	"github.com/azaion/loader/internal/testenv"
)

// payload returns n deterministic pseudo-random bytes.
func payload(n int, seed byte) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}

// folderFor returns a bucket name of its own for a test, so tests share no CDN state.
func folderFor(t *testing.T) string {
	var b [8]byte
	crand.Read(b[:])
	return fmt.Sprintf("t%x", b)
}

// upload posts content to /upload/{name} as curl -F folder=... -F data=@file would.
func (e *testEnv) upload(folder, name, field string, content []byte) (int, []byte) {
	e.t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	if folder != "" {
		mw.WriteField("folder", folder)
	}
	if field != "" {
		w, _ := mw.CreateFormFile(field, name)
		w.Write(content)
	}
	mw.Close()
	return e.do(http.MethodPost, "/upload/"+name, &body, "Content-Type", mw.FormDataContentType())
}

// load posts to /load/{name} and returns the status, body and announced Content-Length.
func (e *testEnv) load(folder, name string) (int, []byte, int64) {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/load/"+name, strings.NewReader(fmt.Sprintf(`{"filename":%q,"folder":%q}`, name, folder)))
	req.Header.Set("Content-Type", "application/json")
	if e.cfg.APIToken != "" {
		req.Header.Set("Authorization", "Bearer "+e.cfg.APIToken)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("load %s/%s: reading body: %v", folder, name, err)
	}
	return resp.StatusCode, b, resp.ContentLength
}

// cacheFiles lists every file under the model cache directory.
func (e *testEnv) cacheFiles() []string {
	var files []string
	filepath.WalkDir(e.cfg.ModelCacheDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, strings.TrimPrefix(p, e.cfg.ModelCacheDir))
		}
		return nil
	})
	return files
}

func TestUploadThenLoadOverHTTP(t *testing.T) {
	e := newTestEnv(t, envOptions{minio: true})
	e.login()
	folder := folderFor(t)
	for i, size := range []int{0, 1, 17, 3071, 3072, 3073, 10 << 10, 1<<20 + 5} {
		name := fmt.Sprintf("model-%d.bin", size)
		content := payload(size, byte(i))
		field := "data"
		if i%2 == 1 {
			field = "file" // the seed's clients used either name
		}
		if code, body := e.upload(folder, name, field, content); code != http.StatusOK || strings.TrimSpace(string(body)) != `{"status":"ok"}` {
			t.Fatalf("upload %d bytes: %d %s", size, code, body)
		}
		code, got, length := e.load(folder, name)
		if code != http.StatusOK {
			t.Fatalf("load %d bytes: %d %s", size, code, got)
		}
		if length != int64(size) || !bytes.Equal(got, content) {
			t.Fatalf("load %d bytes: Content-Length %d, got %d bytes, equal=%v", size, length, len(got), bytes.Equal(got, content))
		}
	}
	e.assertNoSecrets()
}

func TestLoadFailuresOverHTTP(t *testing.T) {
	e := newTestEnv(t, envOptions{minio: true})
	folder := folderFor(t)

	code, body, _ := e.load(folder, "x.bin")
	if code != http.StatusUnauthorized {
		t.Fatalf("not logged in: %d %s, want 401", code, body)
	}
	e.login()
	if code, body, _ = e.load(folder, "absent.bin"); code != http.StatusNotFound {
		t.Fatalf("unknown resource: %d %s, want 404", code, body)
	}
	// The small part exists but the big part is on no CDN bucket.
	if err := e.ref.PutResource(folder, "orphan.bin.small", bytes.NewReader(payload(64, 1))); err != nil {
		t.Fatal(err)
	}
	if code, body, _ = e.load(folder, "orphan.bin"); code != http.StatusNotFound {
		t.Fatalf("big part missing on the CDN: %d %s, want 404", code, body)
	}
	if files := e.cacheFiles(); len(files) != 0 {
		t.Fatalf("failed loads left files in the cache: %v", files)
	}
	// Parts that do not decrypt together.
	if err := e.ref.PutResource(folder, "garbled.bin.small", bytes.NewReader(payload(48, 2))); err != nil {
		t.Fatal(err)
	}
	e.minio.PutObject(t, folder, "garbled.bin.big", payload(4096, 3)) // as another uploader would
	code, body, _ = e.load(folder, "garbled.bin")
	if code != http.StatusInternalServerError || !strings.Contains(detail(t, body), "wrong key or corrupted data") {
		t.Fatalf("undecryptable: %d %s, want 500 naming the cause", code, body)
	}
}

// loaderGoroutines returns the stacks of goroutines running the loader's own packages (the
// test's goroutine aside).
func loaderGoroutines() []string {
	buf := make([]byte, 8<<20)
	var out []string
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if strings.Contains(g, "github.com/azaion/loader/internal/") && !strings.Contains(g, "loaderGoroutines") {
			out = append(out, g)
		}
	}
	return out
}

func TestLoadWithCDNDown(t *testing.T) {
	e := newTestEnv(t, envOptions{minio: true})
	e.login()
	folder := folderFor(t)
	content := payload(200<<10, 9)
	if code, body := e.upload(folder, "m.bin", "data", content); code != http.StatusOK {
		t.Fatalf("upload: %d %s", code, body)
	}
	testenv.StopMinIO(t)

	// Cached: the device keeps working without its CDN.
	code, got, _ := e.load(folder, "m.bin")
	if code != http.StatusOK || !bytes.Equal(got, content) {
		t.Fatalf("cached load with the CDN down: %d, %d bytes", code, len(got))
	}
	// Not cached: 502, and nothing half-written stays behind.
	if err := os.RemoveAll(e.cfg.ModelCacheDir); err != nil {
		t.Fatal(err)
	}
	code, body, _ := e.load(folder, "m.bin")
	if code != http.StatusBadGateway {
		t.Fatalf("uncached load with the CDN down: %d %s, want 502", code, body)
	}
	if files := e.cacheFiles(); len(files) != 0 {
		t.Fatalf("cache holds %v after a failed download", files)
	}
	// Uploads fail visibly too, and the API never gets a small part without its big part.
	before := e.ref.Calls(refapi.EndpointUpload)
	if code, body := e.upload(folder, "new.bin", "data", content); code != http.StatusBadGateway {
		t.Fatalf("upload with the CDN down: %d %s, want 502", code, body)
	}
	if n := e.ref.Calls(refapi.EndpointUpload) - before; n != 0 {
		t.Fatalf("the API received %d small parts of a failed upload", n)
	}
}

func TestLoadWithAPIDown(t *testing.T) {
	e := newTestEnv(t, envOptions{minio: true})
	e.login()
	folder := folderFor(t)
	if code, body := e.upload(folder, "m.bin", "data", payload(5000, 4)); code != http.StatusOK {
		t.Fatalf("upload: %d %s", code, body)
	}
	e.refSrv.Close()
	code, body, _ := e.load(folder, "m.bin")
	if code != http.StatusBadGateway {
		t.Fatalf("API down: %d %s, want 502", code, body)
	}
	if d := detail(t, body); !strings.Contains(d, "unreachable") {
		t.Errorf("detail %q does not say the API is unreachable", d)
	}
}

func TestUploadRefusals(t *testing.T) {
	folder := folderFor(t)
	t.Run("CDN refuses the uploader key", func(t *testing.T) {
		m := testenv.MinIO(t)
		e := newTestEnv(t, envOptions{minio: true, cdn: &refapi.CDNSettings{
			Host:                m.URL(),
			DownloaderAccessKey: m.AccessKey, DownloaderAccessSecret: m.SecretKey,
			UploaderAccessKey: m.AccessKey, UploaderAccessSecret: "wrong-uploader-secret",
		}})
		e.login()
		code, body := e.upload(folder, "m.bin", "data", payload(5000, 5))
		if code != http.StatusBadGateway {
			t.Fatalf("got %d %s, want 502", code, body)
		}
		if strings.Contains(string(body), "wrong-uploader-secret") {
			t.Fatal("the error shows the secret")
		}
		if n := e.ref.Calls(refapi.EndpointUpload); n != 0 {
			t.Fatalf("the API received %d small parts", n)
		}
		if files := e.cacheFiles(); len(files) != 0 {
			t.Fatalf("cache holds %v after a failed upload", files)
		}
		e.assertNoSecrets("wrong-uploader-secret")
	})
	t.Run("API refuses the small part", func(t *testing.T) {
		e := newTestEnv(t, envOptions{minio: true})
		e.login()
		e.ref.SetFault(refapi.EndpointUpload, http.StatusInternalServerError, 1)
		code, body := e.upload(folder, "m2.bin", "data", payload(5000, 6))
		if code != http.StatusBadGateway {
			t.Fatalf("got %d %s, want 502", code, body)
		}
		if files := e.cacheFiles(); len(files) != 0 {
			t.Fatalf("cache holds %v after a failed upload", files)
		}
	})
	t.Run("no file", func(t *testing.T) {
		e := newTestEnv(t, envOptions{minio: true})
		e.login()
		if code, body := e.upload(folder, "m3.bin", "", nil); code != http.StatusUnprocessableEntity {
			t.Fatalf("got %d %s, want 422", code, body)
		}
	})
	t.Run("not logged in", func(t *testing.T) {
		e := newTestEnv(t, envOptions{minio: true})
		if code, body := e.upload(folder, "m4.bin", "data", payload(10, 7)); code != http.StatusUnauthorized {
			t.Fatalf("got %d %s, want 401", code, body)
		}
	})
}

// rawRequest sends a request line exactly as given (Go's client would clean the path) and
// returns the status code.
func rawRequest(t *testing.T, addr, method, target, body string) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", method, target, len(body), body)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestPathLikeNamesRejected(t *testing.T) {
	e := newTestEnv(t, envOptions{minio: true})
	e.login()
	e.ref.ResetCalls()
	addr := strings.TrimPrefix(e.srv.URL, "http://")
	long := strings.Repeat("a", 300)
	for _, target := range []string{"/load/..", "/load/%2e%2e", "/load/..%2Fx", "/load/a%2Fb", "/load/a%5Cb", "/load/.hidden", "/load/a%00b", "/load/" + long,
		"/upload/..", "/upload/a%2Fb", "/upload/.hidden", "/upload/" + long} {
		if code := rawRequest(t, addr, "POST", target, `{"folder":"models"}`); code != http.StatusUnprocessableEntity {
			t.Errorf("POST %s: %d, want 422", target, code)
		}
	}
	for _, folder := range []string{"../x", "a/b", "..", ".hidden", "a\x00b", long} {
		body := fmt.Sprintf(`{"folder":%q}`, folder)
		if code := rawRequest(t, addr, "POST", "/load/ok.bin", body); code != http.StatusUnprocessableEntity {
			t.Errorf("load with folder %q: %d, want 422", folder, code)
		}
		if code, _ := e.upload(folder, "ok.bin", "data", []byte("x")); code != http.StatusUnprocessableEntity {
			t.Errorf("upload with folder %q: %d, want 422", folder, code)
		}
	}
	if code := rawRequest(t, addr, "POST", "/load/a.bin", `{"filename":"b.bin","folder":"models"}`); code != http.StatusUnprocessableEntity {
		t.Errorf("differing filenames: %d, want 422", code)
	}
	for _, ep := range []string{refapi.EndpointGet, refapi.EndpointUpload} {
		if n := e.ref.Calls(ep); n != 0 {
			t.Errorf("rejected names reached the API's %s %d times", ep, n)
		}
	}
	if files := e.cacheFiles(); len(files) != 0 {
		t.Errorf("rejected names created %v", files)
	}
	if _, err := os.Stat(e.cfg.ModelCacheDir); err == nil {
		entries, _ := os.ReadDir(e.cfg.ModelCacheDir)
		if len(entries) != 0 {
			t.Errorf("rejected names created directories in the cache: %v", entries)
		}
	}
}

func TestLoadClientDisconnects(t *testing.T) {
	e := newTestEnv(t, envOptions{minio: true})
	e.login()
	folder := folderFor(t)
	const size = 64 << 20
	content := payload(size, 8)
	if code, body := e.upload(folder, "big.bin", "data", content); code != http.StatusOK {
		t.Fatalf("upload: %d %s", code, body)
	}
	want := sha256.Sum256(content)
	content = nil
	// Uncached, so the first aborted load also starts the shared CDN download into the cache.
	if err := os.RemoveAll(e.cfg.ModelCacheDir); err != nil {
		t.Fatal(err)
	}

	for range 3 {
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/load/big.bin", strings.NewReader(`{"folder":"`+folder+`"}`))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.ContentLength != size {
			t.Fatalf("Content-Length %d", resp.ContentLength)
		}
		if _, err := io.CopyN(io.Discard, resp.Body, size/2); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close() // the client goes away halfway
	}

	// Idle HTTP connections keep goroutines of their own, so count what matters: goroutines
	// still inside the loader's code once every request has ended.
	var stuck []string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if stuck = loaderGoroutines(); len(stuck) == 0 {
			break
		}
	}
	if len(stuck) > 0 {
		t.Fatalf("%d goroutines still in the loader after the clients left:\n%s", len(stuck), strings.Join(stuck, "\n\n"))
	}
	// Each aborted stream closed its cached file.
	fds, _ := os.ReadDir("/proc/self/fd")
	for _, fd := range fds {
		if target, err := os.Readlink("/proc/self/fd/" + fd.Name()); err == nil && strings.HasPrefix(target, e.cfg.ModelCacheDir) {
			t.Errorf("%s is still open after the clients left", target)
		}
	}
	for _, f := range e.cacheFiles() {
		if strings.Contains(f, ".tmp") {
			t.Errorf("temp file left: %s", f)
		}
	}
	// The loader still serves the whole resource afterwards.
	code, got, _ := e.load(folder, "big.bin")
	if code != http.StatusOK || sha256.Sum256(got) != want {
		t.Fatalf("load after disconnects: %d, %d bytes", code, len(got))
	}
}

func TestMetricsMove(t *testing.T) {
	e := newTestEnv(t, envOptions{minio: true})
	e.login()
	folder := folderFor(t)
	content := payload(100<<10, 10)
	if code, body := e.upload(folder, "m.bin", "data", content); code != http.StatusOK {
		t.Fatalf("upload: %d %s", code, body)
	}
	os.RemoveAll(e.cfg.ModelCacheDir)
	for range 2 { // a miss, then a hit
		if code, _, _ := e.load(folder, "m.bin"); code != http.StatusOK {
			t.Fatal("load failed")
		}
	}
	m := scrape(t, e)
	for _, c := range []struct {
		metric string
		want   float64
	}{
		{`azaion_loader_cache_lookups_total{result="miss"}`, 1},
		{`azaion_loader_cache_lookups_total{result="hit"}`, 1},
		{`azaion_loader_resource_bytes_served_total`, float64(2 * len(content))},
		{`azaion_loader_http_requests_total{code="200",route="POST /login"}`, 1},
		{`azaion_loader_upstream_calls_total{endpoint="login",outcome="ok"}`, 1},
		{`azaion_loader_upstream_calls_total{endpoint="resources/get",outcome="ok"}`, 3}, // cdn.yaml and two small parts
		{`azaion_loader_upstream_calls_total{endpoint="resources/upload",outcome="ok"}`, 1},
		{`azaion_loader_http_requests_total{code="200",route="POST /load/{filename}"}`, 2},
	} {
		if got, ok := m[c.metric]; !ok || got != c.want {
			t.Errorf("%s = %v (present %v), want %v", c.metric, got, ok, c.want)
		}
	}
	// The big part is the ciphertext (IV, content, one pad block) less the 3072-byte small part.
	if got, want := m[`azaion_loader_cdn_download_bytes_total`], float64(16+len(content)+16-3072); got != want {
		t.Errorf("CDN download bytes = %v, want %v", got, want)
	}
}
