package main

// Tests of the real binary, started as a process the way an operator or systemd starts it.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/azaion/loader/internal/docker/dockertest"
	"github.com/azaion/loader/internal/logging"
	"github.com/azaion/loader/internal/testenv"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds azaion-loader once per test run.
func binary(t *testing.T) string {
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

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

func TestHelpListsEveryVariable(t *testing.T) {
	bin := binary(t)
	out, err := exec.Command(bin, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("--help: %v\n%s", err, out)
	}
	for _, c := range []string{"serve", "unlock", "archive", "hwinfo", "version"} {
		if !strings.Contains(string(out), c) {
			t.Errorf("--help does not list the %s command:\n%s", c, out)
		}
	}
	out, err = exec.Command(bin, "serve", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("serve --help: %v\n%s", err, out)
	}
	// SPEC §7's variables, written out here rather than taken from the code under test.
	spec := []string{"RESOURCE_API_URL", "IMAGES_PATH", "API_VERSION", "DOCKER_IMAGES", "MODEL_CACHE_DIR",
		"LISTEN_ADDR", "LOG_DIR", "LOG_LEVEL", "LOADER_API_TOKEN", "DOCKER_HOST"}
	for _, name := range append(spec, "--dev") {
		if !strings.Contains(string(out), name) {
			t.Errorf("serve --help does not mention %s", name)
		}
	}
	for _, want := range []string{`default "https://api.azaion.com"`, `default ":8080"`, `default "/opt/azaion/images.enc"`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("serve --help does not show %s", want)
		}
	}
}

func TestBadCommandLine(t *testing.T) {
	bin := binary(t)
	dir := t.TempDir()
	for _, c := range []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"unknown flag", []string{"serve", "--no-such-flag"}, nil, "no-such-flag"},
		{"unknown command", []string{"frobnicate"}, nil, "frobnicate"},
		{"port out of range", []string{"serve", "--listen-addr", ":99999"}, nil, "LISTEN_ADDR"},
		{"port from env", []string{"serve"}, []string{"LISTEN_ADDR=:99999"}, "LISTEN_ADDR"},
		{"archive is a directory", []string{"serve", "--images-path", dir}, nil, "IMAGES_PATH"},
		{"bad log level", []string{"serve"}, []string{"LOG_LEVEL=chatty"}, "LOG_LEVEL"},
		{"stray argument", []string{"version", "extra"}, nil, "extra"},
		{"archive without flags", []string{"archive", "encrypt"}, nil, "--key-fragment"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cmd := exec.Command(bin, c.args...)
			cmd.Env = append(os.Environ(), c.env...)
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != 2 {
				t.Fatalf("exit %v, want exit code 2; output:\n%s", err, out)
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], c.want) {
				t.Fatalf("want one line naming %s, got:\n%s", c.want, out)
			}
		})
	}
}

func TestVersionAndHWInfo(t *testing.T) {
	bin := binary(t)
	out, err := exec.Command(bin, "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "azaion-loader dev (commit unknown, go1.") {
		t.Fatalf("version: %v %q", err, out)
	}
	const fixture = "../../internal/hardware/testdata/bare-vm"
	out, err = exec.Command(bin, "hwinfo", "--root", fixture).Output()
	if err != nil {
		t.Fatalf("hwinfo: %v", err)
	}
	// What a person reads off the fixture's /proc/cpuinfo and /proc/meminfo; no disk serial, no GPU.
	if want := "CPU: AMD EPYC 7763 64-Core Processor. GPU: Unknown. Memory: 4 GiB. DriveSerial: Unknown\n"; string(out) != want {
		t.Fatalf("hwinfo --root %s printed %q, want %q", fixture, out, want)
	}
	out, err = exec.Command(bin, "hwinfo").Output() // this machine
	if err != nil || !regexp.MustCompile(`^CPU: .+\. GPU: .+\. Memory: .+\. DriveSerial: .+\n$`).Match(out) {
		t.Fatalf("hwinfo on this machine: %v %q", err, out)
	}
	if again, _ := exec.Command(bin, "hwinfo").Output(); string(again) != string(out) {
		t.Fatalf("hwinfo not stable: %q then %q", out, again)
	}
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
// it), as startServe does.
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

func TestSIGTERMLetsALoadFinish(t *testing.T) {
	e := newTestEnv(t, envOptions{minio: true}) // reference API and MinIO for the process
	folder := folderFor(t)
	const size = 64 << 20
	content := payload(size, 11)
	want := sha256.Sum256(content)

	logDir := t.TempDir()
	old := filepath.Join(logDir, "log_loader_20200101.txt")
	os.WriteFile(old, []byte("old"), 0o600)
	monthAgo := time.Now().Add(-31 * 24 * time.Hour)
	os.Chtimes(old, monthAgo, monthAgo)

	p := startProcess(t, "RESOURCE_API_URL="+e.refSrv.URL, "MODEL_CACHE_DIR="+t.TempDir(), "LOG_DIR="+logDir, "LOG_LEVEL=debug")
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("a 31-day-old log file survived the start (%v)", err)
	}
	post := func(path, ctype string, body io.Reader) *http.Response {
		req, _ := http.NewRequest(http.MethodPost, p.url+path, body)
		req.Header.Set("Content-Type", ctype)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp := post("/login", "application/json", strings.NewReader(fmt.Sprintf(`{"email":%q,"password":%q}`, testEmail, testPassword)))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("login: %d", resp.StatusCode)
	}
	// Upload through the process, so its cache holds the big part.
	pr, pw := io.Pipe()
	mw := multipartWriter(pw, folder, "big.bin", content)
	go mw()
	resp = post("/upload/big.bin", "multipart/form-data; boundary="+testBoundary, pr)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("upload: %d", resp.StatusCode)
	}

	resp = post("/load/big.bin", "application/json", strings.NewReader(`{"folder":"`+folder+`"}`))
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ContentLength != size {
		t.Fatalf("load: %d, Content-Length %d", resp.StatusCode, resp.ContentLength)
	}
	h := sha256.New()
	if _, err := io.CopyN(h, resp.Body, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The rest of the stream is read only once the shutdown is under way: the loader said so,
	// and it takes no new connection.
	for deadline := time.Now().Add(time.Minute); !strings.Contains(p.stderr.String(), "shutting down"); {
		if time.Now().After(deadline) {
			t.Fatalf("no shutdown after SIGTERM:\n%s", p.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	waitListenerClosed(t, strings.TrimPrefix(p.url, "http://"))
	n, err := io.Copy(h, resp.Body)
	if err != nil || n != size-(1<<20) {
		t.Fatalf("after SIGTERM the client got %d more bytes, err %v", n, err)
	}
	if [32]byte(h.Sum(nil)) != want {
		t.Fatal("the stream finished after SIGTERM differs from the upload")
	}
	select {
	case <-p.done:
		if p.err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", p.err, p.stderr.String())
		}
	case <-time.After(40 * time.Second):
		t.Fatal("the loader did not exit after SIGTERM")
	}
	// Today's log file holds the run, and no secret.
	data, err := os.ReadFile(filepath.Join(logDir, logging.FileName(time.Now())))
	if err != nil {
		t.Fatalf("no log file with today's name: %v", err)
	}
	for _, want := range []string{"POST /login", "POST /load/{filename}", "shutting down", "stopped"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("the log file lacks %q", want)
		}
	}
	if strings.Contains(string(data), testPassword) || strings.Contains(p.stderr.String(), testPassword) {
		t.Error("the password is in the logs")
	}
	if regexp.MustCompile(`eyJ[\w-]+\.[\w-]+\.[\w-]+`).Match(data) {
		t.Error("a JWT is in the logs")
	}
}

// TestProcessLogsHoldNoSecrets runs the real binary through a login, an upload and a load and an
// unlock to ready, then reads every log file and its stderr for a secret.
func TestProcessLogsHoldNoSecrets(t *testing.T) {
	e := newTestEnv(t, envOptions{minio: true, docker: true}) // reference API, MinIO, dockerd
	tag := ulTag()
	images := []string{"azaion/annotations", "azaion/flights"}
	archive := filepath.Join(t.TempDir(), "images.enc")
	ulEncrypt(t, e.fragment, bytes.NewReader(dockertest.BuildArchive(t, e.cfg.DockerHost, ulRefs(images, tag))), archive)
	logDir := t.TempDir()
	p := startProcess(t, "RESOURCE_API_URL="+e.refSrv.URL, "MODEL_CACHE_DIR="+t.TempDir(), "LOG_DIR="+logDir,
		"LOG_LEVEL=debug", "DOCKER_HOST="+e.cfg.DockerHost, "IMAGES_PATH="+archive,
		"DOCKER_IMAGES="+strings.Join(images, ","), "API_VERSION="+tag)
	call := func(method, path, ctype string, body io.Reader) []byte {
		t.Helper()
		req, _ := http.NewRequest(method, p.url+path, body)
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
		}
		return b
	}
	creds := fmt.Sprintf(`{"email":%q,"password":%q}`, testEmail, testPassword)
	call("POST", "/login", "application/json", strings.NewReader(creds))
	folder := folderFor(t)
	content := payload(100<<10, 12)
	pr, pw := io.Pipe()
	go multipartWriter(pw, folder, "m.bin", content)()
	call("POST", "/upload/m.bin", "multipart/form-data; boundary="+testBoundary, pr)
	if got := call("POST", "/load/m.bin", "application/json", strings.NewReader(`{"folder":"`+folder+`"}`)); !bytes.Equal(got, content) {
		t.Fatal("load returned other bytes than uploaded")
	}
	call("POST", "/unlock", "application/json", strings.NewReader(creds))
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var st struct {
			State string  `json:"state"`
			Error *string `json:"error"`
		}
		json.Unmarshal(call("GET", "/unlock/status", "", nil), &st)
		if st.State == "ready" {
			break
		}
		if st.State == "error" || time.Now().After(deadline) {
			t.Fatalf("unlock ended in %s (%v)", st.State, st.Error)
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	<-p.done

	logs := p.stderr.String() + readDir(t, logDir)
	e.checkNoSecrets(logs)
	for _, want := range []string{"POST /login", "POST /upload/{filename}", "POST /load/{filename}", "POST /unlock", "state=ready"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the logs lack %q: the check above read the wrong thing", want)
		}
	}
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
