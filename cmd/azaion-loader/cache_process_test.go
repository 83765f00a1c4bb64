package main

// Tests of the model cache and of uploads (SPEC §5, §11) with the built binary as a process,
// where restarts, signals, crashes of the parts and the process's own memory matter.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/azaion/loader/internal/refapi"
	"github.com/azaion/loader/internal/testenv"
)

// noKeepAlive is the client of these tests: no idle connection of its own stays in the
// loader, so the loader's goroutines and descriptors can be compared before and after.
var noKeepAlive = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// call sends a request to the process and returns the status and body.
func (p *process) call(t *testing.T, method, path, ctype string, body io.Reader) (int, []byte) {
	t.Helper()
	return p.callCtx(t, context.Background(), method, path, ctype, body)
}

func (p *process) callCtx(t *testing.T, ctx context.Context, method, path, ctype string, body io.Reader) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, p.url+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := noKeepAlive.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (p *process) login(t *testing.T) {
	t.Helper()
	creds := fmt.Sprintf(`{"email":%q,"password":%q}`, testEmail, testPassword)
	if code, body := p.call(t, "POST", "/login", "application/json", strings.NewReader(creds)); code != http.StatusOK {
		t.Fatalf("login: %d %s", code, body)
	}
}

func (p *process) load(t *testing.T, folder, name string) (int, []byte) {
	t.Helper()
	return p.call(t, "POST", "/load/"+name, "application/json", strings.NewReader(`{"folder":"`+folder+`"}`))
}

// upload streams content to /upload/{name} and returns the status and body.
func (p *process) upload(t *testing.T, ctx context.Context, folder, name string, content []byte) (int, []byte) {
	t.Helper()
	pr, pw := io.Pipe()
	go multipartWriter(pw, folder, name, content)()
	return p.callCtx(t, ctx, "POST", "/upload/"+name, "multipart/form-data; boundary="+testBoundary, pr)
}

// metrics returns the process's /metrics samples by series.
func (p *process) metrics(t *testing.T) map[string]float64 {
	t.Helper()
	code, body := p.call(t, "GET", "/metrics", "", nil)
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			key := name
			for _, l := range m.GetLabel() {
				key += "|" + l.GetName() + "=" + l.GetValue()
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

// status reads a "Key:   N kB" line of /proc/PID/status, in bytes.
func (p *process) status(t *testing.T, key string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n << 10
		}
	}
	t.Fatalf("no %s in /proc/%d/status", key, p.cmd.Process.Pid)
	return 0
}

// fds is the number of open descriptors of the process.
func (p *process) fds(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// kill ends the process with SIGKILL, as a power cut would.
func (p *process) kill(t *testing.T) {
	t.Helper()
	p.cmd.Process.Kill()
	<-p.done
}

// waitUntil polls ok every 50 ms until it holds, for at most d.
func waitUntil(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return -1
	}
	return fi.Size()
}

// cdnProxy is an HTTP reverse proxy in front of MinIO that counts the body bytes of the GET
// answers it passes to the loader (the CDN bytes downloaded, counted at the S3 side), and can
// hold the bodies of large PUTs after a number of bytes. It forwards the Host header the
// loader signed.
type cdnProxy struct {
	*httptest.Server
	mu        sync.Mutex
	got       int64
	hold      chan struct{} // when not nil, PUT bodies stop after holdAfter bytes until closed
	holdAfter int64
	holding   chan struct{} // closed when a PUT body got to holdAfter
}

func newCDNProxy(t *testing.T, m testenv.MinIOServer) *cdnProxy {
	t.Helper()
	target, _ := url.Parse(m.URL())
	p := &cdnProxy{}
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target)
		r.Out.Host = r.In.Host // the Host the loader signed
		p.mu.Lock()
		hold, after, holding := p.hold, p.holdAfter, p.holding
		p.mu.Unlock()
		if r.Out.Method == http.MethodPut && hold != nil && r.Out.ContentLength > after {
			r.Out.Body = &heldBody{ReadCloser: r.Out.Body, left: after, hold: hold, reached: holding}
		}
	}}
	rp.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.Method == http.MethodGet {
			resp.Body = &countingBody{ReadCloser: resp.Body, p: p}
		}
		return nil
	}
	rp.ErrorLog = nil
	p.Server = httptest.NewServer(rp)
	t.Cleanup(p.Close)
	return p
}

// received is how many GET body bytes went to the loader since the last reset.
func (p *cdnProxy) received() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.got
}

func (p *cdnProxy) reset() {
	p.mu.Lock()
	p.got = 0
	p.mu.Unlock()
}

// holdPuts makes the next large PUT bodies stop after n bytes; the returned channel closes
// when one got there. release lets them go on.
func (p *cdnProxy) holdPuts(n int64) (holding <-chan struct{}, release func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hold, p.holdAfter, p.holding = make(chan struct{}), n, make(chan struct{})
	hold := p.hold
	var once sync.Once
	return p.holding, func() {
		once.Do(func() {
			close(hold)
			p.mu.Lock()
			p.hold = nil
			p.mu.Unlock()
		})
	}
}

type countingBody struct {
	io.ReadCloser
	p *cdnProxy
}

func (b *countingBody) Read(buf []byte) (int, error) {
	n, err := b.ReadCloser.Read(buf)
	b.p.mu.Lock()
	b.p.got += int64(n)
	b.p.mu.Unlock()
	return n, err
}

type heldBody struct {
	io.ReadCloser
	left    int64
	hold    chan struct{}
	reached chan struct{}
	once    sync.Once
}

func (b *heldBody) Read(buf []byte) (int, error) {
	if b.left == 0 {
		b.once.Do(func() { close(b.reached) })
		<-b.hold
		return b.ReadCloser.Read(buf)
	}
	if int64(len(buf)) > b.left {
		buf = buf[:b.left]
	}
	n, err := b.ReadCloser.Read(buf)
	b.left -= int64(n)
	return n, err
}

// cdnThrough is the test MinIO's settings with host replaced, as cdn.yaml would carry them.
func cdnThrough(m testenv.MinIOServer, host string) *refapi.CDNSettings {
	return &refapi.CDNSettings{Host: host,
		DownloaderAccessKey: m.AccessKey, DownloaderAccessSecret: m.SecretKey,
		UploaderAccessKey: m.AccessKey, UploaderAccessSecret: m.SecretKey}
}

// TestResumeAfterKill: the loader is killed (SIGKILL) when about half of a 64 MiB big part is
// on disk; restarted, it continues the download where the durable bytes end: /load is
// byte-identical, and the CDN sends under 60 % of the part after the restart.
func TestResumeAfterKill(t *testing.T) {
	m := testenv.MinIO(t)
	proxy := newCDNProxy(t, m)
	e := newTestEnv(t, envOptions{minio: true, cdn: cdnThrough(m, proxy.URL)})
	folder := folderFor(t)
	const size = 64 << 20
	content := payload(size, 81)
	want := sha256.Sum256(content)
	e.seed(folder, "big.bin", content)
	content = nil
	bigSize := int64(encryptedLen(size) - 3072)

	cacheDir := t.TempDir()
	env := []string{"RESOURCE_API_URL=" + e.refSrv.URL, "MODEL_CACHE_DIR=" + cacheDir, "LOG_DIR=" + t.TempDir()}
	p := startProcess(t, append(env, "CDN_RATE_LIMIT=8MiB")...) // the half-way moment is easy to catch
	p.login(t)
	go p.load(t, folder, "big.bin") // dies with the process
	partial := filepath.Join(cacheDir, folder, ".big.bin.big.partial")
	waitUntil(t, 2*time.Minute, "half of the part on disk", func() bool { return fileSize(partial) >= bigSize/2 })
	p.kill(t)
	onDisk := fileSize(partial)
	t.Logf("killed with %d of %d bytes (%.0f %%) of the partial on disk", onDisk, bigSize, 100*float64(onDisk)/float64(bigSize))

	proxy.reset()
	p2 := startProcess(t, env...)
	p2.login(t)
	code, got := p2.load(t, folder, "big.bin")
	if code != http.StatusOK || sha256.Sum256(got) != want {
		t.Fatalf("/load after the restart: %d, %d bytes, identical %v", code, len(got), sha256.Sum256(got) == want)
	}
	after := proxy.received()
	t.Logf("CDN bytes after the restart: %d = %.1f %% of the part (a restart from zero: 100 %%)", after, 100*float64(after)/float64(bigSize))
	if float64(after) >= 0.6*float64(bigSize) {
		t.Errorf("downloaded %d bytes after the restart, %.0f %% of the part: want under 60 %%", after, 100*float64(after)/float64(bigSize))
	}
	if _, err := os.Stat(partial); err == nil {
		t.Error("the partial is still there after the download completed")
	}
}

// encryptedLen is len(IV ‖ AES-256-CBC(PKCS#7(plain))) (SPEC §4).
func encryptedLen(plain int) int { return 16 + (plain/16+1)*16 }

// TestPrefetchFolderProcess: PREFETCH=folder/* over a folder of 3 resources: all 3 big parts
// are in the cache after the login, without any /load; GET /cache shows them cached, and the
// first /load is served from the cache.
func TestPrefetchFolderProcess(t *testing.T) {
	e := newTestEnv(t, envOptions{minio: true})
	folder := folderFor(t)
	content := map[string][]byte{}
	for i, n := range []string{"a.bin", "b.bin", "c.bin"} {
		content[n] = payload(1<<20+i, byte(90+i))
		e.seed(folder, n, content[n])
	}
	cacheDir := t.TempDir()
	p := startProcess(t, "RESOURCE_API_URL="+e.refSrv.URL, "MODEL_CACHE_DIR="+cacheDir, "LOG_DIR="+t.TempDir(),
		"PREFETCH="+folder+"/*")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("loader's log:\n%s", p.stderr.String())
		}
	})
	p.login(t)
	var st cacheStatus
	waitUntil(t, time.Minute, "3 parts cached by prefetch", func() bool {
		_, body := p.call(t, "GET", "/cache", "", nil)
		st = cacheStatus{}
		json.Unmarshal(body, &st)
		cached := 0
		for _, part := range st.Parts {
			if part.State == "cached" && part.Folder == folder {
				cached++
			}
		}
		return cached == 3
	})
	for _, part := range st.Parts {
		if part.Size == nil || part.Bytes != *part.Size || part.LastUsed == nil {
			t.Errorf("part %+v: want bytes = size and a time of last use (its download)", part)
		}
	}
	m := p.metrics(t)
	if n := m["azaion_loader_http_requests_total|code=200|route=POST /load/{filename}"]; n != 0 {
		t.Fatalf("%v loads before the check", n)
	}
	if n := m["azaion_loader_cache_parts|state=cached"]; n != 3 {
		t.Errorf("metric of cached parts: %v, want 3", n)
	}
	code, got := p.load(t, folder, "b.bin")
	if code != http.StatusOK || !bytes.Equal(got, content["b.bin"]) {
		t.Fatalf("load after prefetch: %d", code)
	}
	if hit := p.metrics(t)["azaion_loader_cache_lookups_total|result=hit"]; hit != 1 {
		t.Errorf("the load after prefetch was no cache hit (%v hits)", hit)
	}
}

// TestUnlockCLIKeepsLiveTemps: the unlock command, run beside a live service sharing its
// MODEL_CACHE_DIR, does not sweep the service's temp files, and neither does a second
// service; once nobody else runs, a start sweeps what a dead run left.
func TestUnlockCLIKeepsLiveTemps(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "models"), 0o750)
	env := []string{"MODEL_CACHE_DIR=" + dir, "RESOURCE_API_URL=http://127.0.0.1:1", "LOG_DIR=" + t.TempDir()}
	live := startProcess(t, env...)
	tmp := filepath.Join(dir, "models", ".m.big.tmp-123456")
	if err := os.WriteFile(tmp, []byte("an upload in progress"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary(t), "unlock", "--email", testEmail)
	cmd.Env = append(os.Environ(), append(env, "AZAION_PASSWORD=x", "IMAGES_PATH="+filepath.Join(dir, "none.enc"))...)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("unlock against a closed port succeeded:\n%s", out)
	}
	if _, err := os.Stat(tmp); err != nil {
		t.Fatalf("the unlock command removed a live service's temp file: %v\n%s", err, out)
	}
	second := startProcess(t, env...)
	if _, err := os.Stat(tmp); err != nil {
		t.Fatalf("a second service removed a live service's temp file: %v", err)
	}
	for _, p := range []*process{live, second} {
		p.cmd.Process.Signal(syscall.SIGTERM)
		<-p.done
	}
	startProcess(t, env...)
	if _, err := os.Stat(tmp); err == nil {
		t.Fatal("a start with nobody else using the cache kept a dead run's temp file")
	}
}

// TestUploadMemory: 16 concurrent uploads of 40 MiB: every one succeeds, and the loader's
// peak RSS (VmHWM) stays under 48 MiB and within 8 MiB of the peak of 2 concurrent uploads:
// memory does not grow with the number of uploads. (Measured here: about 20 and 23 MiB; the
// S3 client's 16 MiB part buffer per upload made it 345 MiB for 16 uploads before.)
func TestUploadMemory(t *testing.T) {
	e := newTestEnv(t, envOptions{minio: true})
	folder := folderFor(t)
	content := payload(40<<20, 95)
	peak := func(n int) int64 {
		p := startProcess(t, "RESOURCE_API_URL="+e.refSrv.URL, "MODEL_CACHE_DIR="+t.TempDir(), "LOG_DIR="+t.TempDir())
		p.login(t)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				if code, body := p.upload(t, context.Background(), folder, fmt.Sprintf("m%d-%d.bin", n, i), content); code != http.StatusOK {
					t.Errorf("upload %d of %d: %d %s", i, n, code, body)
				}
			})
		}
		wg.Wait()
		hwm := p.status(t, "VmHWM")
		t.Logf("%2d concurrent 40 MiB uploads: peak RSS %.1f MiB", n, float64(hwm)/(1<<20))
		p.cmd.Process.Signal(syscall.SIGTERM)
		<-p.done
		return hwm
	}
	two, sixteen := peak(2), peak(16)
	if sixteen > 48<<20 {
		t.Errorf("peak RSS %.1f MiB with 16 uploads, want under 48 MiB", float64(sixteen)/(1<<20))
	}
	if sixteen-two > 8<<20 {
		t.Errorf("peak RSS grew by %.1f MiB from 2 to 16 uploads, want at most 8 MiB", float64(sixteen-two)/(1<<20))
	}
	e.login() // another device, with an empty cache
	if code, got, _ := e.load(folder, "m16-7.bin"); code != http.StatusOK || !bytes.Equal(got, content) {
		t.Errorf("an upload of the 16 does not load back: %d", code)
	}
}

// refapiProcess is cmd/azaion-refapi running as a process on a fixed port.
type refapiProcess struct {
	cmd  *exec.Cmd
	done chan struct{}
}

var (
	refapiOnce sync.Once
	refapiBin  string
)

// startRefAPI runs the reference API binary on addr with the test account, data in dataDir
// and cdn.yaml pointing at cdn.
func startRefAPI(t *testing.T, addr, dataDir string, cdn *refapi.CDNSettings) *refapiProcess {
	t.Helper()
	refapiOnce.Do(func() {
		refapiBin = filepath.Join(filepath.Dir(binary(t)), "azaion-refapi")
		if out, err := exec.Command("go", "build", "-o", refapiBin, "../azaion-refapi").CombinedOutput(); err != nil {
			t.Fatalf("go build azaion-refapi: %v\n%s", err, out)
		}
	})
	users := filepath.Join(dataDir, "..", "users.yaml")
	os.WriteFile(users, fmt.Appendf(nil, "- email: %s\n  password: %q\n  role: ResourceUploader\n", testEmail, testPassword), 0o600)
	cmd := exec.Command(refapiBin, "--listen", addr, "--users", users, "--data", dataDir)
	cmd.Env = append(os.Environ(), "AZAION_REFAPI_CDN_HOST="+cdn.Host,
		"AZAION_REFAPI_CDN_DOWNLOADER_KEY="+cdn.DownloaderAccessKey, "AZAION_REFAPI_CDN_DOWNLOADER_SECRET="+cdn.DownloaderAccessSecret,
		"AZAION_REFAPI_CDN_UPLOADER_KEY="+cdn.UploaderAccessKey, "AZAION_REFAPI_CDN_UPLOADER_SECRET="+cdn.UploaderAccessSecret)
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &refapiProcess{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(r.done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-r.done })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.Contains(line, "listening") {
		t.Fatalf("azaion-refapi did not start: %q %v", line, err)
	}
	go io.Copy(io.Discard, stdout)
	return r
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestUploadPartsKilled: the reference API, then MinIO, killed with SIGKILL while an /upload
// is sending its big part: the upload ends in an error, never 200; started again, a retry
// succeeds and the resource loads back.
func TestUploadPartsKilled(t *testing.T) {
	m := testenv.MinIO(t)
	proxy := newCDNProxy(t, m)
	cdn := cdnThrough(m, proxy.URL)
	apiAddr, apiData := freeAddr(t), filepath.Join(t.TempDir(), "data")
	api := startRefAPI(t, apiAddr, apiData, cdn)
	p := startProcess(t, "RESOURCE_API_URL=http://"+apiAddr, "MODEL_CACHE_DIR="+t.TempDir(), "LOG_DIR="+t.TempDir(),
		"CDN_STALL_TIMEOUT=5s")
	p.login(t)
	folder := folderFor(t)
	content := payload(8<<20, 96)

	// upload sends content while the CDN holds its body half-way; crash runs then, and the
	// body goes on.
	upload := func(name string, crash func()) int {
		holding, release := proxy.holdPuts(2 << 20)
		defer release()
		codec := make(chan int, 1)
		go func() {
			code, body := p.upload(t, context.Background(), folder, name, content)
			t.Logf("upload %s: %d %.200s", name, code, body)
			codec <- code
		}()
		select {
		case <-holding:
		case code := <-codec:
			t.Fatalf("the upload ended (%d) before its big part reached the CDN", code)
		}
		crash()
		release()
		return <-codec
	}

	parent := t
	t.Run("refapi", func(t *testing.T) {
		code := upload("a.bin", func() { api.cmd.Process.Kill(); <-api.done })
		if code == http.StatusOK {
			t.Fatal("an upload whose Resource API was killed answered 200")
		}
		startRefAPI(parent, apiAddr, apiData, cdn) // for the next subtest too
		if code, body := p.upload(t, context.Background(), folder, "a.bin", content); code != http.StatusOK {
			t.Fatalf("retry after the Resource API came back: %d %s", code, body)
		}
		if code, got := p.load(t, folder, "a.bin"); code != http.StatusOK || !bytes.Equal(got, content) {
			t.Fatalf("load after the retry: %d", code)
		}
	})
	t.Run("minio", func(t *testing.T) {
		code := upload("b.bin", func() { testenv.KillMinIO(t) })
		if code == http.StatusOK {
			t.Fatal("an upload whose CDN was killed answered 200")
		}
		testenv.StartMinIO(t)
		if code, body := p.upload(t, context.Background(), folder, "b.bin", content); code != http.StatusOK {
			t.Fatalf("retry after MinIO came back: %d %s", code, body)
		}
		if code, got := p.load(t, folder, "b.bin"); code != http.StatusOK || !bytes.Equal(got, content) {
			t.Fatalf("load after the retry: %d", code)
		}
	})
}

// TestUploadCDNFrozen: MinIO frozen (SIGSTOP) during a 64 MiB /upload: the upload ends with
// 502 within CDN_STALL_TIMEOUT plus a margin, nothing is committed, and its temp file,
// goroutines and descriptors are freed; also when the client has already gone.
func TestUploadCDNFrozen(t *testing.T) {
	const stall = 3 * time.Second
	e := newTestEnv(t, envOptions{minio: true})
	folder := folderFor(t)
	cacheDir := t.TempDir()
	p := startProcess(t, "RESOURCE_API_URL="+e.refSrv.URL, "MODEL_CACHE_DIR="+cacheDir, "LOG_DIR="+t.TempDir(),
		"CDN_STALL_TIMEOUT="+stall.String())
	p.login(t)
	if code, body := p.upload(t, context.Background(), folder, "warm.bin", payload(100<<10, 97)); code != http.StatusOK {
		t.Fatalf("warm-up upload: %d %s", code, body)
	}
	goroutines := func() float64 { return p.metrics(t)["go_goroutines"] }
	baseG, baseFD := goroutines(), p.fds(t)
	content := payload(64<<20, 98)

	for _, gone := range []bool{false, true} {
		name := fmt.Sprintf("frozen-%v.bin", gone)
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			pr, pw := io.Pipe()
			sent := make(chan struct{})
			go func() {
				multipartWriter(pw, folder, name, content)()
				close(sent)
			}()
			codec := make(chan int, 1)
			go func() {
				code, _ := p.callCtx(t, ctx, "POST", "/upload/"+name, "multipart/form-data; boundary="+testBoundary, pr)
				codec <- code
			}()
			<-sent
			// The loader has written the whole big part to its cache: what is left is the CDN's.
			bigSize := int64(encryptedLen(len(content)) - 3072)
			waitUntil(t, time.Minute, "the big part in the cache's temp file", func() bool {
				for _, f := range walkFiles(cacheDir) {
					if strings.Contains(f, "."+name+".big.tmp-") && fileSize(f) == bigSize {
						return true
					}
				}
				return false
			})
			testenv.PauseMinIO(t)
			frozen := time.Now()
			if gone {
				cancel() // the client leaves
			} else {
				code := <-codec
				took := time.Since(frozen)
				t.Logf("502 after %v with the CDN frozen (CDN_STALL_TIMEOUT %v)", took.Round(time.Millisecond), stall)
				if code != http.StatusBadGateway {
					t.Fatalf("upload to a frozen CDN: %d, want 502", code)
				}
				if took > 2*stall+15*time.Second {
					t.Errorf("the upload took %v to end, want within CDN_STALL_TIMEOUT %v plus a margin", took, stall)
				}
			}
			var left string
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("left: %s\nloader's log:\n%s", left, p.stderr.String())
				}
			})
			waitUntil(t, 2*stall+40*time.Second, "the upload's temp file, goroutines and descriptors freed", func() bool {
				var temps []string
				for _, f := range walkFiles(cacheDir) {
					if strings.Contains(f, name) {
						temps = append(temps, f)
					}
				}
				g, fd := goroutines(), p.fds(t)
				left = fmt.Sprintf("files %q, goroutines %v (before %v), descriptors %d (before %d)", temps, g, baseG, fd, baseFD)
				return len(temps) == 0 && g <= baseG && fd <= baseFD
			})
			t.Logf("freed %v after the freeze", time.Since(frozen).Round(time.Millisecond))
			testenv.ResumeMinIO(t)
			if _, err := minioClient(t, e.minio).StatObject(context.Background(), folder, name+".big", minio.StatObjectOptions{}); err == nil {
				t.Error("the CDN holds the big part of the failed upload")
			}
			if _, err := os.Stat(e.ref.ResourcePath(folder, name+".small")); err == nil {
				t.Error("the Resource API holds the small part of the failed upload")
			}
		})
	}
}

// walkFiles lists the files under dir.
func walkFiles(dir string) []string {
	var out []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			out = append(out, p)
		}
		return nil
	})
	return out
}
