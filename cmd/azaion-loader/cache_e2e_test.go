package main

// End-to-end tests of the model cache (SPEC §11) through the loader's HTTP API, wired as serve
// wires it, with the reference API and the real MinIO.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/azaion/loader/internal/config"
	"github.com/azaion/loader/internal/hardware"
	"github.com/azaion/loader/internal/refapi"
	"github.com/azaion/loader/internal/resourceapi"
	"github.com/azaion/loader/internal/resources"
	"github.com/azaion/loader/internal/testenv"
)

// seed uploads content as folder/name with a loader of its own (its own cache), as another
// device would: the loader under test has nothing of it cached.
func (e *testEnv) seed(folder, name string, content []byte) {
	e.t.Helper()
	api, err := resourceapi.New(e.refSrv.URL, hardware.Fingerprint("/"), resourceapi.Options{})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := api.Login(e.t.Context(), testEmail, testPassword); err != nil {
		e.t.Fatal(err)
	}
	s, err := resources.New(api, resources.Options{CacheDir: e.t.TempDir()})
	if err != nil {
		e.t.Fatal(err)
	}
	defer s.Close()
	if err := s.Upload(e.t.Context(), folder, name, bytes.NewReader(content)); err != nil {
		e.t.Fatalf("seed %s/%s: %v", folder, name, err)
	}
}

// cacheStatus is GET /cache.
type cacheStatus struct {
	Parts []struct {
		Folder, Name, State string
		Bytes               int64
		Size                *int64
		LastUsed            *string
	}
	Bytes int64
	Max   *int64
}

func (e *testEnv) cache() cacheStatus {
	e.t.Helper()
	code, body := e.do(http.MethodGet, "/cache", nil)
	if code != http.StatusOK {
		e.t.Fatalf("GET /cache: %d %s", code, body)
	}
	var st cacheStatus
	if err := json.Unmarshal(body, &st); err != nil {
		e.t.Fatalf("GET /cache: %v: %s", err, body)
	}
	return st
}

// diskBytes sums the sizes of the files under dir.
func diskBytes(dir string) int64 {
	var n int64
	for _, f := range walkFiles(dir) {
		n += max(fileSize(f), 0) // a file removed meanwhile counts for nothing
	}
	return n
}

// TestDiskFull: MODEL_CACHE_DIR on an 8 MiB tmpfs. A /load of a 20 MiB resource answers 507
// without downloading; a 1 MiB resource still loads; an /upload of 20 MiB answers 507 and
// leaves nothing half-written anywhere; the loader keeps serving.
func TestDiskFull(t *testing.T) {
	disk := testenv.Tmpfs(t, "8m")
	e := newTestEnv(t, envOptions{minio: true, configure: func(c *config.Config) { c.ModelCacheDir = disk }})
	folder := folderFor(t)
	big, small := payload(20<<20, 61), payload(1<<20, 62)
	e.seed(folder, "big.bin", big)
	e.seed(folder, "small.bin", small)
	e.login()

	code, body, _ := e.load(folder, "big.bin")
	if code != http.StatusInsufficientStorage {
		t.Fatalf("/load of 20 MiB on an 8 MiB disk: %d %.200s, want 507", code, body)
	}
	d := detail(t, body)
	if !strings.HasPrefix(d, "not enough disk space") || !strings.Contains(d, "need ") || !strings.Contains(d, ", have ") {
		t.Errorf("detail %q does not say how much space is needed and free", d)
	}
	if got := scrape(t, e)[`azaion_loader_cdn_download_bytes_total`]; got != 0 {
		t.Errorf("%v bytes downloaded for a part that cannot fit", got)
	}
	if files := e.cacheFiles(); len(files) != 0 {
		t.Errorf("the refused load left %v", files)
	}

	if code, got, _ := e.load(folder, "small.bin"); code != http.StatusOK || !bytes.Equal(got, small) {
		t.Fatalf("/load of 1 MiB: %d, %d bytes", code, len(got))
	}

	before := e.ref.Calls(refapi.EndpointUpload)
	code, body = e.upload(folder, "new.bin", "data", big)
	if code != http.StatusInsufficientStorage || !strings.HasPrefix(detail(t, body), "not enough disk space") {
		t.Fatalf("/upload of 20 MiB on an 8 MiB disk: %d %s, want 507", code, body)
	}
	if n := e.ref.Calls(refapi.EndpointUpload) - before; n != 0 {
		t.Errorf("the Resource API got %d small parts of the failed upload", n)
	}
	if _, err := e.minio.Client(t).StatObject(t.Context(), folder, "new.bin.big", minio.StatObjectOptions{}); err == nil {
		t.Error("the CDN holds the big part of the failed upload")
	}
	for _, f := range e.cacheFiles() {
		if !strings.HasSuffix(f, "small.bin.big") && !strings.HasSuffix(f, "small.bin.big.pair") {
			t.Errorf("the failed upload left %s", f)
		}
	}
	// Still serving, from the cache and through the CDN.
	if code, got, _ := e.load(folder, "small.bin"); code != http.StatusOK || !bytes.Equal(got, small) {
		t.Fatalf("/load after the full disk: %d", code)
	}
	if code, body := e.upload(folder, "tiny.bin", "data", payload(10_000, 63)); code != http.StatusOK {
		t.Fatalf("a small /upload after the full disk: %d %s", code, body)
	}
}

// TestCacheMax: MODEL_CACHE_MAX of 5 MiB and five 2 MiB resources loaded in turn: the cache
// stays under the cap, every load is byte-identical, and a part being streamed is not removed
// under its reader.
func TestCacheMax(t *testing.T) {
	const max = 5 << 20
	e := newTestEnv(t, envOptions{minio: true, configure: func(c *config.Config) { c.ModelCacheMax = max }})
	folder := folderFor(t)
	content := make([][]byte, 5)
	for i := range content {
		content[i] = payload(2<<20, byte(70+i))
		e.seed(folder, fmt.Sprintf("r%d.bin", i), content[i])
	}
	e.login()
	check := func(when string) {
		t.Helper()
		st := e.cache()
		if st.Max == nil || *st.Max != max {
			t.Errorf("%s: GET /cache max %v, want %d", when, st.Max, max)
		}
		if st.Bytes > max || diskBytes(e.cfg.ModelCacheDir) > max+64<<10 { // + records
			t.Errorf("%s: %d bytes in the cache (%d on disk), over the cap of %d", when, st.Bytes, diskBytes(e.cfg.ModelCacheDir), max)
		}
	}
	for i := range content {
		code, got, _ := e.load(folder, fmt.Sprintf("r%d.bin", i))
		if code != http.StatusOK || !bytes.Equal(got, content[i]) {
			t.Fatalf("load r%d: %d, %d bytes, identical %v", i, code, len(got), bytes.Equal(got, content[i]))
		}
		check(fmt.Sprintf("after r%d", i))
	}

	// r0 (evicted by now) is streamed to a client that reads slowly: small socket buffers on
	// both ends keep the loader's handler inside the stream while r1..r3 come in and push the
	// cache over its cap.
	slow := httptest.NewUnstartedServer(e.loader.handler())
	slow.Listener = smallBuffers{slow.Listener}
	slow.Start()
	defer slow.Close()
	servedBefore := scrape(t, e)[`azaion_loader_resource_bytes_served_total`]
	client := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{Control: smallReceiveBuffer}).DialContext}}
	req, _ := http.NewRequest(http.MethodPost, slow.URL+"/load/r0.bin", strings.NewReader(`{"folder":"`+folder+`"}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	head := make([]byte, 64<<10)
	if _, err := io.ReadFull(resp.Body, head); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		if code, got, _ := e.load(folder, fmt.Sprintf("r%d.bin", i)); code != http.StatusOK || !bytes.Equal(got, content[i]) {
			t.Fatalf("load r%d beside the stream: %d", i, code)
		}
	}
	// The stream is still inside the handler: it has not read all of r0 from the cache.
	r0Served := scrape(t, e)[`azaion_loader_resource_bytes_served_total`] - servedBefore - 3*(2<<20)
	if r0Served >= 2<<20 {
		t.Fatal("the handler read all of r0 already: the test cannot tell whether it was kept for its reader")
	}
	t.Logf("%.0f of %d bytes of r0 read by the handler while r1..r3 were loaded", r0Served, 2<<20)
	if _, err := os.Stat(filepath.Join(e.cfg.ModelCacheDir, folder, "r0.bin.big")); err != nil {
		t.Errorf("r0 was removed while it was being streamed: %v\n%s", err, grepLines(e.logs.String(), "MODEL_CACHE_MAX"))
	}
	rest, err := io.ReadAll(resp.Body)
	if err != nil || !bytes.Equal(append(head, rest...), content[0]) {
		t.Fatalf("the streamed r0: %v, identical %v", err, bytes.Equal(append(head, rest...), content[0]))
	}
	resp.Body.Close()
	// Released, it goes with the next part's eviction.
	if code, _, _ := e.load(folder, "r4.bin"); code != http.StatusOK {
		t.Fatal("load r4")
	}
	check("after the stream")
}

// smallBuffers is a listener whose connections have a 16 KiB send buffer: a handler writing
// to a client that does not read blocks soon.
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(16 << 10)
	}
	return c, err
}

// smallReceiveBuffer fixes a socket's receive buffer at 16 KiB, so a client that does not
// read holds the sender back at once.
func smallReceiveBuffer(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 16<<10)
	})
	if err != nil {
		return err
	}
	return serr
}

// TestOfflineUnpairedPart: MinIO stopped and an unpaired big part in the cache (as placed on
// the device image at provisioning): /load answers 200, byte-identical, with a warning.
func TestOfflineUnpairedPart(t *testing.T) {
	e := newTestEnv(t, envOptions{minio: true})
	folder := folderFor(t)
	content := payload(500<<10, 64)
	e.seed(folder, "m.bin", content)
	obj, err := e.minio.Client(t).GetObject(t.Context(), folder, "m.bin.big", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	big, err := io.ReadAll(obj)
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(e.cfg.ModelCacheDir, folder), 0o755)
	if err := os.WriteFile(filepath.Join(e.cfg.ModelCacheDir, folder, "m.bin.big"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	e.login()
	testenv.StopMinIO(t)
	code, got, _ := e.load(folder, "m.bin")
	if code != http.StatusOK || !bytes.Equal(got, content) {
		t.Fatalf("offline load of an unpaired part: %d, %d bytes, identical %v", code, len(got), bytes.Equal(got, content))
	}
	if !strings.Contains(e.logs.String(), "no pairing record") {
		t.Error("no warning in the log that an unpaired part was served")
	}
}

// TestBitRot: one byte flipped in the middle of a cached big part (CBC padding cannot see
// it), and a cached part replaced by another resource's part of the same size: /load answers
// the right bytes (fetched again), never the damaged ones; also after a restart with the
// file's modification time put back.
func TestBitRot(t *testing.T) {
	e := newTestEnv(t, envOptions{minio: true})
	folder := folderFor(t)
	content, other := payload(3<<20, 65), payload(3<<20, 66)
	e.login()
	for name, c := range map[string][]byte{"m.bin": content, "o.bin": other} {
		if code, body := e.upload(folder, name, "data", c); code != http.StatusOK {
			t.Fatalf("upload %s: %d %s", name, code, body)
		}
	}
	big := filepath.Join(e.cfg.ModelCacheDir, folder, "m.bin.big")
	load := func(what string) {
		t.Helper()
		code, got, _ := e.load(folder, "m.bin")
		if code != http.StatusOK || !bytes.Equal(got, content) {
			t.Fatalf("%s: %d, %d bytes, identical %v", what, code, len(got), bytes.Equal(got, content))
		}
	}
	flip := func(keepMtime bool) {
		t.Helper()
		fi, err := os.Stat(big)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(big)
		b[len(b)/2] ^= 0x20
		if err := os.WriteFile(big, b, 0o640); err != nil {
			t.Fatal(err)
		}
		if keepMtime {
			os.Chtimes(big, fi.ModTime(), fi.ModTime())
		}
	}
	gets := func() float64 { return scrape(t, e)[`azaion_loader_cache_lookups_total{result="miss"}`] }

	load("first load")
	flip(false)
	before := gets()
	load("a flipped byte")
	if gets() != before+1 {
		t.Errorf("the damaged part was not fetched again")
	}

	// Another resource's part of the same size put in its place (its record kept).
	if err := os.Rename(filepath.Join(e.cfg.ModelCacheDir, folder, "o.bin.big"), big); err != nil {
		t.Fatal(err)
	}
	load("another resource's part")

	// A restart: the new process verifies the part once more, whatever its mtime says.
	flip(true)
	l2, err := newLoader(e.cfg, e.logs, "/")
	if err != nil {
		t.Fatal(err)
	}
	e.srv.Close()
	e.loader.Close()
	e.loader = l2
	e.srv = httptest.NewServer(l2.handler()) // both closed by newTestEnv's cleanup
	e.login()
	load("a flipped byte after a restart")
}

// TestInconsistentResourceOverHTTP: upload v1, then v2 whose small-part step fails: a device
// with an empty cache answers 502 "resource is being replaced or inconsistent", never v1's
// small part joined to v2's big part.
func TestInconsistentResourceOverHTTP(t *testing.T) {
	e := newTestEnv(t, envOptions{minio: true})
	folder := folderFor(t)
	e.login()
	if code, body := e.upload(folder, "m.bin", "data", payload(100<<10, 67)); code != http.StatusOK {
		t.Fatalf("upload v1: %d %s", code, body)
	}
	e.ref.SetFault(refapi.EndpointUpload, http.StatusInternalServerError, 1)
	if code, body := e.upload(folder, "m.bin", "data", payload(100<<10, 68)); code != http.StatusBadGateway {
		t.Fatalf("upload v2 with the small-part step failing: %d %s, want 502", code, body)
	}
	if err := os.RemoveAll(e.cfg.ModelCacheDir); err != nil { // a device with an empty cache
		t.Fatal(err)
	}
	code, body, _ := e.load(folder, "m.bin")
	if code != http.StatusBadGateway || detail(t, body) != "resource is being replaced or inconsistent" {
		t.Fatalf("load of the mix: %d %s, want 502 resource is being replaced or inconsistent", code, body)
	}
}

// TestLoadForbidden: the Resource API refuses the small part with 403 (the user's hardware is
// bound to another device): /load answers 403 with the reason, after one re-login.
func TestLoadForbidden(t *testing.T) {
	e := newTestEnv(t, envOptions{minio: true})
	folder := folderFor(t)
	e.login()
	if code, body := e.upload(folder, "m.bin", "data", payload(10<<10, 69)); code != http.StatusOK {
		t.Fatalf("upload: %d %s", code, body)
	}
	e.ref.SetHardware(testEmail, "CPU: another device. GPU: Unknown. Memory: 1. DriveSerial: X")
	e.ref.ResetCalls()
	code, body, _ := e.load(folder, "m.bin")
	if code != http.StatusForbidden || !strings.Contains(detail(t, body), "hardware") {
		t.Fatalf("load with the hardware bound elsewhere: %d %s, want 403 naming the hardware", code, body)
	}
	if n := e.ref.Calls(refapi.EndpointLogin); n != 1 {
		t.Errorf("%d logins, want one re-login before giving up", n)
	}
	e.assertNoSecrets()
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
