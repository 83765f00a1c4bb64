package main

// Helpers of the process tests of the model cache and of uploads: HTTP calls to a loader
// process, its /proc figures, a counting and holding reverse proxy in front of MinIO, and the
// reference API as a process of its own.

import (
	"bufio"
	"bytes"
	"context"
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
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/azaion/loader/internal/refapi"
	"github.com/azaion/loader/internal/testenv"
)

// noKeepAlive is the client of these tests: no idle connection of its own stays in the
// loader, so the loader's goroutines and descriptors can be compared before and after.
var noKeepAlive = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// send sends a request to the process and returns the status and body.
func (p *process) send(t *testing.T, method, path, ctype string, body io.Reader) (int, []byte) {
	t.Helper()
	return p.sendCtx(t, context.Background(), method, path, ctype, body)
}

func (p *process) sendCtx(t *testing.T, ctx context.Context, method, path, ctype string, body io.Reader) (int, []byte) {
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
	if code, body := p.send(t, "POST", "/login", "application/json", strings.NewReader(creds)); code != http.StatusOK {
		t.Fatalf("login: %d %s", code, body)
	}
}

func (p *process) load(t *testing.T, folder, name string) (int, []byte) {
	t.Helper()
	return p.send(t, "POST", "/load/"+name, "application/json", strings.NewReader(`{"folder":"`+folder+`"}`))
}

// upload streams content to /upload/{name} and returns the status and body.
func (p *process) upload(t *testing.T, ctx context.Context, folder, name string, content []byte) (int, []byte) {
	t.Helper()
	pr, pw := io.Pipe()
	go multipartWriter(pw, folder, name, content)()
	return p.sendCtx(t, ctx, "POST", "/upload/"+name, "multipart/form-data; boundary="+testBoundary, pr)
}

// metrics returns the process's /metrics samples by series.
func (p *process) metrics(t *testing.T) map[string]float64 {
	t.Helper()
	code, body := p.send(t, "GET", "/metrics", "", nil)
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

// vmStatus reads a "Key:   N kB" line of /proc/PID/status, in bytes.
func (p *process) vmStatus(t *testing.T, key string) int64 {
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

// refapiOn is cmd/azaion-refapi running as a process on a fixed port.
type refapiOn struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// startRefAPI runs the reference API binary on addr with the test account, data in dataDir
// and cdn.yaml pointing at cdn.
func startRefAPIOn(t *testing.T, addr, dataDir string, cdn *refapi.CDNSettings) *refapiOn {
	t.Helper()
	users := filepath.Join(dataDir, "..", "users.yaml")
	os.WriteFile(users, fmt.Appendf(nil, "- email: %s\n  password: %q\n  role: ResourceUploader\n", testEmail, testPassword), 0o600)
	cmd := exec.Command(refapiBinary(t), "--listen", addr, "--users", users, "--data", dataDir)
	cmd.Env = append(os.Environ(), "AZAION_REFAPI_CDN_HOST="+cdn.Host,
		"AZAION_REFAPI_CDN_DOWNLOADER_KEY="+cdn.DownloaderAccessKey, "AZAION_REFAPI_CDN_DOWNLOADER_SECRET="+cdn.DownloaderAccessSecret,
		"AZAION_REFAPI_CDN_UPLOADER_KEY="+cdn.UploaderAccessKey, "AZAION_REFAPI_CDN_UPLOADER_SECRET="+cdn.UploaderAccessSecret)
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &refapiOn{cmd: cmd, done: make(chan struct{})}
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

// encryptedLen is len(IV ‖ AES-256-CBC(PKCS#7(plain))) (SPEC §4).
func encryptedLen(plain int) int { return 16 + (plain/16+1)*16 }
