package main

// Helpers of the tests that run built binaries as processes: azaion-loader (run to completion,
// or serving), and the reference Resource API (cmd/azaion-refapi) as a process of its own. One
// helper for each job: building, starting, calling over HTTP, reading /proc, polling.

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
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/azaion/loader/internal/refapi"
	"github.com/azaion/loader/internal/testenv"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error

	refapiOnce sync.Once
	refapiPath string
	refapiErr  error
)

// binary builds azaion-loader once per test run.
func binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "azaion-loader-bin-*")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "azaion-loader")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// refapiBinary builds cmd/azaion-refapi once per test run, next to the loader's binary.
func refapiBinary(t testing.TB) string {
	t.Helper()
	dir := filepath.Dir(binary(t))
	refapiOnce.Do(func() {
		refapiPath = filepath.Join(dir, "azaion-refapi")
		out, err := exec.Command("go", "build", "-o", refapiPath, "../azaion-refapi").CombinedOutput()
		if err != nil {
			refapiErr = fmt.Errorf("go build azaion-refapi: %v\n%s", err, out)
		}
	})
	if refapiErr != nil {
		t.Fatal(refapiErr)
	}
	return refapiPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath)) // the reference API's binary too
	}
	os.Exit(code)
}

// result is how a run of the binary ended.
type result struct {
	code           int
	stdout, stderr string
	took           time.Duration
}

// runBin runs the built binary in dir (a fresh directory when "") with stdin, env added to the
// test's environment, and args, and waits for it to exit (bounded: a hang fails the test rather
// than the run).
func runBin(t *testing.T, dir, stdin string, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	if dir == "" {
		dir = t.TempDir()
	}
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String(), took: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ctx.Err() == nil:
		r.code = ee.ExitCode()
	default:
		t.Fatalf("%v: %v\n%s%s", args, err, r.stdout, r.stderr)
	}
	return r
}

// process is a running azaion-loader serve.
type process struct {
	cmd    *exec.Cmd
	url    string
	stderr *testenv.SyncBuffer
	done   chan struct{} // closed when the process has exited; err is then its exit status
	err    error
}

// startProcess starts `azaion-loader serve` on a free loopback port with env added.
func startProcess(t *testing.T, env ...string) *process {
	t.Helper()
	return startServe(t, nil, env...)
}

// startServe starts `azaion-loader serve ARGS...` on a free loopback port with env added. The
// device identity is none unless env sets DEVICE_CONFIG.
func startServe(t *testing.T, args []string, env ...string) *process {
	t.Helper()
	return startCmd(t, exec.Command(binary(t), append([]string{"serve"}, args...)...), env...)
}

// startCmd starts cmd, which runs `azaion-loader serve` (perhaps through a wrapper that execs
// it), as startServe does. When the test fails, its log shows the loader's.
func startCmd(t *testing.T, cmd *exec.Cmd, env ...string) *process {
	t.Helper()
	defaults := []string{"LISTEN_ADDR=127.0.0.1:0", "DEVICE_CONFIG=" + filepath.Join(t.TempDir(), "no-device.conf")}
	cmd.Env = append(os.Environ(), append(defaults, env...)...)
	p := &process{cmd: cmd, stderr: &testenv.SyncBuffer{}, done: make(chan struct{})}
	pr, pw := io.Pipe()
	cmd.Stderr = io.MultiWriter(p.stderr, pw)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = cmd.Wait(); pw.Close(); close(p.done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("the loader's log (pid %d):\n%s", cmd.Process.Pid, p.stderr.String())
		}
	})
	addr := regexp.MustCompile(`msg=listening addr=(\S+)`)
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		if m := addr.FindStringSubmatch(sc.Text()); m != nil {
			p.url = "http://" + m[1]
			go io.Copy(io.Discard, pr) // keep draining
			return p
		}
	}
	t.Fatalf("the loader did not start:\n%s", p.stderr.String())
	return nil
}

// kill ends the process with SIGKILL, as a power cut would.
func (p *process) kill(t *testing.T) {
	t.Helper()
	p.cmd.Process.Kill()
	<-p.done
}

// stop ends the process with SIGTERM and waits for it to exit.
func (p *process) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	<-p.done
}

// procClient is how tests call loader processes: every request on a connection of its own, so
// that no idle connection of the test's stays in the loader, whose goroutines and descriptors
// tests compare before and after.
var procClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// requestLimit bounds every request to a process, so that a hung loader fails a test instead of
// hanging it. It is far above what any request here takes.
const requestLimit = 5 * time.Minute

// request sends one request to the process (ctype: its Content-Type, if any) and returns the
// status, the body and how long the answer took. It is safe from any goroutine.
func (p *process) request(ctx context.Context, method, path, ctype string, body io.Reader) (int, []byte, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, requestLimit)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, p.url+path, body)
	if err != nil {
		return 0, nil, 0, err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	start := time.Now()
	resp, err := procClient.Do(req)
	if err != nil {
		return 0, nil, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, time.Since(start), err
}

// send is request for calls whose failure is an answer too (a process killed meanwhile): a
// request that got no answer is status 0 with the error as the body.
func (p *process) send(ctx context.Context, method, path, ctype string, body io.Reader) (int, []byte) {
	code, b, _, err := p.request(ctx, method, path, ctype, body)
	if code == 0 && err != nil {
		return 0, []byte(err.Error())
	}
	return code, b
}

// call sends a JSON body (none when empty) and returns the status, the body and how long the
// answer took; a request that got no answer fails the test.
func (p *process) call(t testing.TB, method, path, body string) (int, []byte, time.Duration) {
	t.Helper()
	var r io.Reader
	ctype := ""
	if body != "" {
		r, ctype = strings.NewReader(body), "application/json"
	}
	code, b, took, err := p.request(context.Background(), method, path, ctype, r)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return code, b, took
}

// getJSON decodes GET path into v and returns how long the answer took.
func (p *process) getJSON(t testing.TB, path string, v any) time.Duration {
	t.Helper()
	code, body, took := p.call(t, http.MethodGet, path, "")
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, code, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v: %s", path, err, body)
	}
	return took
}

// testCreds is the test account's login body.
func testCreds() string {
	return fmt.Sprintf(`{"email":%q,"password":%q}`, testEmail, testPassword)
}

// login logs the process in as the test account and fails the test if that does not work.
func (p *process) login(t testing.TB) {
	t.Helper()
	if code, body, _ := p.call(t, "POST", "/login", testCreds()); code != http.StatusOK {
		t.Fatalf("login: %d %s", code, body)
	}
}

// load is POST /load/{name} of folder.
func (p *process) load(t testing.TB, folder, name string) (int, []byte) {
	t.Helper()
	return p.send(context.Background(), "POST", "/load/"+name, "application/json", strings.NewReader(`{"folder":"`+folder+`"}`))
}

// upload streams content to /upload/{name} and returns the status and body.
func (p *process) upload(t testing.TB, ctx context.Context, folder, name string, content []byte) (int, []byte) {
	t.Helper()
	pr, pw := io.Pipe()
	go multipartWriter(pw, folder, name, content)()
	return p.send(ctx, "POST", "/upload/"+name, "multipart/form-data; boundary="+testBoundary, pr)
}

const testBoundary = "azaion-test-boundary"

// multipartWriter returns a function streaming a multipart body (folder, then the file) to w.
func multipartWriter(w *io.PipeWriter, folder, name string, content []byte) func() {
	return func() {
		fmt.Fprintf(w, "--%s\r\nContent-Disposition: form-data; name=\"folder\"\r\n\r\n%s\r\n", testBoundary, folder)
		fmt.Fprintf(w, "--%s\r\nContent-Disposition: form-data; name=\"data\"; filename=%q\r\nContent-Type: application/octet-stream\r\n\r\n", testBoundary, name)
		w.Write(content)
		fmt.Fprintf(w, "\r\n--%s--\r\n", testBoundary)
		w.Close()
	}
}

// metrics returns the process's /metrics samples as parseMetrics gives them.
func (p *process) metrics(t testing.TB) map[string]float64 {
	t.Helper()
	code, body, _ := p.call(t, "GET", "/metrics", "")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	return parseMetrics(t, body)
}

func (p *process) status(t testing.TB) statusBody {
	t.Helper()
	var st statusBody
	p.getJSON(t, "/status", &st)
	if st.Unattended.State == "" || st.Unattended.Attempts == nil {
		t.Fatalf("GET /status has no unattended block: %v", st)
	}
	return st
}

func (p *process) unlockStatus(t testing.TB) ulStatus {
	t.Helper()
	var st ulStatus
	p.getJSON(t, "/unlock/status", &st)
	return st
}

// pollStatus polls GET /status until cond holds, for at most limit.
func (p *process) pollStatus(t testing.TB, what string, limit time.Duration, cond func(statusBody) bool) statusBody {
	t.Helper()
	return poll(t, what, limit, 20*time.Millisecond, func() statusBody { return p.status(t) }, cond)
}

// pollUnlock polls GET /unlock/status every `every` until cond holds, for at most limit.
func (p *process) pollUnlock(t testing.TB, what string, limit, every time.Duration, cond func(ulStatus) bool) ulStatus {
	t.Helper()
	return poll(t, what, limit, every, func() ulStatus { return p.unlockStatus(t) }, cond)
}

// poll calls get every `every` until done holds of what it returned, for at most limit, and
// returns that; past limit the test fails with the last value.
func poll[T any](t testing.TB, what string, limit, every time.Duration, get func() T, done func(T) bool) T {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		v := get()
		if done(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; last: %v", limit, what, v)
		}
		time.Sleep(every)
	}
}

// waitUntil polls ok every 50 ms until it holds, for at most d.
func waitUntil(t testing.TB, d time.Duration, what string, ok func() bool) {
	t.Helper()
	poll(t, what, d, 50*time.Millisecond, ok, func(b bool) bool { return b })
}

// waitListenerClosed waits until addr refuses new connections: the server's Shutdown has begun.
func waitListenerClosed(t testing.TB, addr string) {
	t.Helper()
	poll(t, addr+" to refuse connections", time.Minute, 10*time.Millisecond, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return true
		}
		c.Close()
		return false
	}, func(closed bool) bool { return closed })
}

// vmStatus reads a "Key:   N kB" line of /proc/PID/status, in bytes.
func (p *process) vmStatus(t testing.TB, key string) int64 {
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
func (p *process) fds(t testing.TB) int {
	t.Helper()
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// sample is what the process holds at a moment.
type sample struct {
	goroutines, fds, conns int
	rss                    int64
}

// sample reads the process's goroutines and open connections from /metrics (whose own
// connection is not counted) and its descriptors and RSS from /proc.
func (p *process) sample(t testing.TB) sample {
	t.Helper()
	m := p.metrics(t)
	return sample{
		goroutines: int(m["go_goroutines"]),
		conns:      int(m["azaion_loader_http_connections_open"]) - 1, // the scrape's own
		fds:        p.fds(t),
		rss:        p.vmStatus(t, "VmRSS"),
	}
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// refapiProcess is cmd/azaion-refapi running as a process of its own, so that a test can stop
// it (SIGSTOP) or kill it.
type refapiProcess struct {
	cmd  *exec.Cmd
	url  string
	done chan struct{} // closed when the process has exited
}

// refapiSetup is how startRefapi runs the reference API. The zero value: a free loopback port,
// fresh data, the default key fragment, and a cdn.yaml pointing at a closed port.
type refapiSetup struct {
	addr     string // host:port to listen on
	dataDir  string // the resources; the same directory across a restart keeps them
	fragment []byte // served as the key fragment
	cdn      *refapi.CDNSettings
}

// startRefapi runs azaion-refapi with the test account (CompanionPC), as s says, and waits
// until it listens.
func startRefapi(t *testing.T, s refapiSetup) *refapiProcess {
	t.Helper()
	dir := t.TempDir()
	if s.addr == "" {
		s.addr = "127.0.0.1:0"
	}
	if s.dataDir == "" {
		s.dataDir = filepath.Join(dir, "data")
	}
	cdn := refapi.CDNSettings{Host: "http://127.0.0.1:1", DownloaderAccessKey: "k", DownloaderAccessSecret: "s", UploaderAccessKey: "k", UploaderAccessSecret: "s"}
	if s.cdn != nil {
		cdn = *s.cdn
	}
	users, _ := yaml.Marshal([]map[string]string{{"email": testEmail, "password": testPassword, "role": "CompanionPC"}})
	if err := os.WriteFile(filepath.Join(dir, "users.yaml"), users, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(refapiBinary(t), "--listen", s.addr)
	cmd.Env = append(os.Environ(),
		"AZAION_REFAPI_USERS="+filepath.Join(dir, "users.yaml"),
		"AZAION_REFAPI_DATA="+s.dataDir,
		"AZAION_REFAPI_CDN_HOST="+cdn.Host,
		"AZAION_REFAPI_CDN_DOWNLOADER_KEY="+cdn.DownloaderAccessKey, "AZAION_REFAPI_CDN_DOWNLOADER_SECRET="+cdn.DownloaderAccessSecret,
		"AZAION_REFAPI_CDN_UPLOADER_KEY="+cdn.UploaderAccessKey, "AZAION_REFAPI_CDN_UPLOADER_SECRET="+cdn.UploaderAccessSecret)
	if s.fragment != nil {
		if err := os.WriteFile(filepath.Join(dir, "fragment"), s.fragment, 0o600); err != nil {
			t.Fatal(err)
		}
		cmd.Env = append(cmd.Env, "AZAION_REFAPI_KEY_FRAGMENT_FILE="+filepath.Join(dir, "fragment"))
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &refapiProcess{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(r.done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGCONT)
		cmd.Process.Kill()
		<-r.done
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	url, ok := strings.CutPrefix(strings.TrimSpace(line), "azaion-refapi listening on ")
	if err != nil || !ok {
		t.Fatalf("azaion-refapi did not start: %q %v", line, err)
	}
	r.url = url
	go io.Copy(io.Discard, stdout)
	return r
}

func (r *refapiProcess) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := r.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// kill ends the reference API with SIGKILL, as a crash would.
func (r *refapiProcess) kill() {
	r.cmd.Process.Kill()
	<-r.done
}

// freeAddr is a loopback address nothing listens on (for a server to take later).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return -1
	}
	return fi.Size()
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
