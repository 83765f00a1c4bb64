package main

// Tests of the real binary, started as a process the way an operator or systemd starts it.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/azaion/loader/internal/docker/dockertest"
	"github.com/azaion/loader/internal/logging"
)

func TestHelpListsEveryVariable(t *testing.T) {
	r := runBin(t, "", "", nil, "--help")
	out := r.stdout + r.stderr
	if r.code != 0 {
		t.Fatalf("--help: exit %d\n%s", r.code, out)
	}
	for _, c := range []string{"serve", "unlock", "archive", "hwinfo", "version"} {
		if !strings.Contains(out, c) {
			t.Errorf("--help does not list the %s command:\n%s", c, out)
		}
	}
	r = runBin(t, "", "", nil, "serve", "--help")
	out = r.stdout + r.stderr
	if r.code != 0 {
		t.Fatalf("serve --help: exit %d\n%s", r.code, out)
	}
	// SPEC §7's variables, written out here rather than taken from the code under test.
	spec := []string{"RESOURCE_API_URL", "IMAGES_PATH", "API_VERSION", "DOCKER_IMAGES", "MODEL_CACHE_DIR",
		"LISTEN_ADDR", "LOG_DIR", "LOG_LEVEL", "LOADER_API_TOKEN", "DOCKER_HOST"}
	for _, name := range append(spec, "--dev") {
		if !strings.Contains(out, name) {
			t.Errorf("serve --help does not mention %s", name)
		}
	}
	for _, want := range []string{`default "https://api.azaion.com"`, `default ":8080"`, `default "/opt/azaion/images.enc"`} {
		if !strings.Contains(out, want) {
			t.Errorf("serve --help does not show %s", want)
		}
	}
}

func TestBadCommandLine(t *testing.T) {
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
			r := runBin(t, dir, "", c.env, c.args...)
			out := r.stdout + r.stderr
			if r.code != 2 {
				t.Fatalf("exit %d, want exit code 2; output:\n%s", r.code, out)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], c.want) {
				t.Fatalf("want one line naming %s, got:\n%s", c.want, out)
			}
		})
	}
}

func TestVersionAndHWInfo(t *testing.T) {
	r := runBin(t, ".", "", nil, "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "azaion-loader dev (commit unknown, go1.") {
		t.Fatalf("version: exit %d %q", r.code, r.stdout)
	}
	const fixture = "../../internal/hardware/testdata/bare-vm"
	r = runBin(t, ".", "", nil, "hwinfo", "--root", fixture)
	if r.code != 0 {
		t.Fatalf("hwinfo: exit %d %s", r.code, r.stderr)
	}
	// What a person reads off the fixture's /proc/cpuinfo and /proc/meminfo; no disk serial, no GPU.
	if want := "CPU: AMD EPYC 7763 64-Core Processor. GPU: Unknown. Memory: 4 GiB. DriveSerial: Unknown\n"; r.stdout != want {
		t.Fatalf("hwinfo --root %s printed %q, want %q", fixture, r.stdout, want)
	}
	r = runBin(t, ".", "", nil, "hwinfo") // this machine
	if r.code != 0 || !regexp.MustCompile(`^CPU: .+\. GPU: .+\. Memory: .+\. DriveSerial: .+\n$`).MatchString(r.stdout) {
		t.Fatalf("hwinfo on this machine: exit %d %q", r.code, r.stdout)
	}
	if again := runBin(t, ".", "", nil, "hwinfo"); again.stdout != r.stdout {
		t.Fatalf("hwinfo not stable: %q then %q", r.stdout, again.stdout)
	}
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
	p.login(t)
	// Upload through the process, so its cache holds the big part.
	if code, body := p.upload(t, context.Background(), folder, "big.bin", content); code != http.StatusOK {
		t.Fatalf("upload: %d %s", code, body)
	}

	// The load's answer is read in two goes, around the SIGTERM.
	resp, err := http.Post(p.url+"/load/big.bin", "application/json", strings.NewReader(`{"folder":"`+folder+`"}`))
	if err != nil {
		t.Fatal(err)
	}
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
	waitUntil(t, time.Minute, "the shutdown after SIGTERM", func() bool { return strings.Contains(p.stderr.String(), "shutting down") })
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
	p.login(t)
	folder := folderFor(t)
	content := payload(100<<10, 12)
	if code, body := p.upload(t, context.Background(), folder, "m.bin", content); code != http.StatusOK {
		t.Fatalf("upload: %d %s", code, body)
	}
	if code, got := p.load(t, folder, "m.bin"); code != http.StatusOK || !bytes.Equal(got, content) {
		t.Fatalf("load: %d, %d bytes, want the %d uploaded", code, len(got), len(content))
	}
	if code, body, _ := p.call(t, "POST", "/unlock", testCreds()); code != http.StatusOK {
		t.Fatalf("POST /unlock: %d %s", code, body)
	}
	st := p.pollUnlock(t, "the unlock to end", 2*time.Minute, 50*time.Millisecond, func(s ulStatus) bool { return s.State == "ready" || s.State == "error" })
	if st.State != "ready" {
		t.Fatalf("unlock ended %v", st)
	}
	p.stop()

	logs := p.stderr.String() + readDir(t, logDir)
	e.checkNoSecrets(logs)
	for _, want := range []string{"POST /login", "POST /upload/{filename}", "POST /load/{filename}", "POST /unlock", "state=ready"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the logs lack %q: the check above read the wrong thing", want)
		}
	}
}
