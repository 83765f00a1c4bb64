// Package testenv tells integration tests where the real parts are: dockerd, MinIO, swtpm,
// openssl and a headless Chromium.
//
// scripts/test.sh installs and starts the parts and exports their addresses. A test that needs a
// part it cannot find is skipped on a developer's machine, and fails when CI is set (to anything):
// a CI run must never count a skipped integration test as passing.
package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// Environment variables set by scripts/test.sh.
const (
	EnvDockerHost     = "AZAION_TEST_DOCKER_HOST"
	EnvDockerCtl      = "AZAION_TEST_DOCKER_CTL"
	EnvMinIOEndpoint  = "AZAION_TEST_MINIO_ENDPOINT"
	EnvMinIOAccessKey = "AZAION_TEST_MINIO_ACCESS_KEY"
	EnvMinIOSecretKey = "AZAION_TEST_MINIO_SECRET_KEY"
	EnvMinIOCtl       = "AZAION_TEST_MINIO_CTL"
	// EnvLockDir names a directory shared by all test processes of one run. go test runs the
	// packages' test binaries in parallel, so a fault test in one package that stops MinIO or
	// dockerd would break the tests of another package using it at the same time. With EnvLockDir
	// set, every test that asks for a part holds a shared lock until it ends, and StopMinIO and
	// StopDocker take it exclusively until the part is started again.
	EnvLockDir = "AZAION_TEST_LOCK_DIR"
)

// MinIOServer is a running MinIO reachable over plain HTTP on loopback.
type MinIOServer struct {
	Endpoint  string // host:port
	AccessKey string
	SecretKey string
}

// URL is the endpoint with its scheme, as a cdn.yaml "host" would carry it.
func (m MinIOServer) URL() string { return "http://" + m.Endpoint }

// Missing skips the test, or fails it when CI is set to anything (Woodpecker sets
// CI=woodpecker, GitHub and GitLab CI=true), because a real part is not available.
func Missing(t testing.TB, what string) {
	t.Helper()
	if ci := os.Getenv("CI"); ci != "" {
		t.Fatalf("%s is not available, and CI=%s: run the tests through scripts/test.sh", what, ci)
	}
	t.Skipf("%s is not available (run the tests through scripts/test.sh)", what)
}

// DockerHost returns the DOCKER_HOST of a running dockerd dedicated to tests.
func DockerHost(t testing.TB) string {
	t.Helper()
	h := os.Getenv(EnvDockerHost)
	if h == "" {
		Missing(t, "dockerd ("+EnvDockerHost+")")
	}
	parts.shared(t)
	return h
}

// MinIO returns the running MinIO dedicated to tests.
func MinIO(t testing.TB) MinIOServer {
	t.Helper()
	m := MinIOServer{
		Endpoint:  os.Getenv(EnvMinIOEndpoint),
		AccessKey: os.Getenv(EnvMinIOAccessKey),
		SecretKey: os.Getenv(EnvMinIOSecretKey),
	}
	if m.Endpoint == "" || m.AccessKey == "" || m.SecretKey == "" {
		Missing(t, "MinIO ("+EnvMinIOEndpoint+")")
	}
	parts.shared(t)
	return m
}

// OpenSSL returns the path of the openssl command line tool.
func OpenSSL(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("openssl")
	if err != nil {
		Missing(t, "openssl")
	}
	return p
}

// Chromium returns the path of a Chromium (or Chrome) browser that runs headless, for tests of
// pages served to people (GET /docs).
func Chromium(t testing.TB) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	Missing(t, "chromium")
	return ""
}

// StopMinIO stops the test MinIO and registers a cleanup that starts it again, so a fault test
// leaves the server running for the tests after it. Tests that call it must not run in parallel
// with other MinIO tests.
func StopMinIO(t testing.TB) { t.Helper(); control(t, EnvMinIOCtl, "MinIO") }

// StartMinIO starts the test MinIO again after StopMinIO, waiting until it answers.
func StartMinIO(t testing.TB) { t.Helper(); ctl(t, EnvMinIOCtl, "start") }

// PauseMinIO freezes the test MinIO with SIGSTOP: it keeps its port and connections and
// answers nothing, as a hung server does. A cleanup resumes it (SIGCONT). Tests that call it
// must not run in parallel with other MinIO tests.
func PauseMinIO(t testing.TB) { t.Helper(); pause(t, EnvMinIOCtl, "MinIO") }

// ResumeMinIO lets a MinIO frozen by PauseMinIO go on.
func ResumeMinIO(t testing.TB) { t.Helper(); ctl(t, EnvMinIOCtl, "resume") }

// KillMinIO kills the test MinIO with SIGKILL, as a crash would, and registers a cleanup
// that starts it again. Tests that call it must not run in parallel with other MinIO tests.
func KillMinIO(t testing.TB) {
	t.Helper()
	act(t, EnvMinIOCtl, "MinIO", "kill", "start")
}

// StopDocker stops the test dockerd and registers a cleanup that starts it again.
func StopDocker(t testing.TB) { t.Helper(); control(t, EnvDockerCtl, "dockerd") }

// StartDocker starts the test dockerd again after StopDocker, waiting until it answers.
func StartDocker(t testing.TB) { t.Helper(); ctl(t, EnvDockerCtl, "start") }

// StopSWTPM stops the shared TPM simulator and registers a cleanup that starts it again.
func StopSWTPM(t testing.TB) { t.Helper(); control(t, EnvSWTPMCtl, "swtpm") }

// StartSWTPM starts the shared TPM simulator again after StopSWTPM, waiting until it answers.
func StartSWTPM(t testing.TB) { t.Helper(); ctl(t, EnvSWTPMCtl, "start") }

// PauseDocker stops the test dockerd with SIGSTOP: it keeps its socket, so connections are
// accepted and never answered, as a hung daemon's are. Like StopDocker it takes the parts lock
// exclusively and registers a cleanup that resumes the daemon.
func PauseDocker(t testing.TB) { t.Helper(); pause(t, EnvDockerCtl, "dockerd") }

// ResumeDocker sends the test dockerd SIGCONT after PauseDocker, waiting until it answers.
func ResumeDocker(t testing.TB) { t.Helper(); ctl(t, EnvDockerCtl, "resume") }

func control(t testing.TB, env, what string) {
	t.Helper()
	act(t, env, what, "stop", "start")
}

// act runs "$env action" holding the parts lock exclusively, and "$env undo" when the test
// ends.
func act(t testing.TB, env, what, action, undo string) {
	t.Helper()
	if os.Getenv(env) == "" {
		Missing(t, what+" control ("+env+")")
	}
	parts.exclusive(t)
	ctl(t, env, action)
	t.Cleanup(func() { ctl(t, env, undo) }) // runs before the lock's cleanup (LIFO)
}

func pause(t testing.TB, env, what string) {
	t.Helper()
	act(t, env, what, "pause", "resume")
}

// ctl runs "$env stop|start|pause|resume"; the script it names is idempotent and waits until the part is
// down or answering.
func ctl(t testing.TB, env, action string) {
	t.Helper()
	args := strings.Fields(os.Getenv(env))
	if len(args) == 0 {
		Missing(t, env)
	}
	out, err := exec.Command(args[0], append(args[1:], action)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", env, action, err, out)
	}
}

// parts is the lock that keeps fault tests from stopping a part under another package's test.
var parts partsLock

// partsLock is a flock(2) on EnvLockDir/parts.lock, shared by every test process of a run. Within
// one process a count of the tests using a part decides when the shared lock is taken and
// released. A fault test runs alone in its process (it is not parallel, and go test runs a
// sequential test alone), so it converts the process's lock to exclusive; flock drops the shared
// lock before it waits for the exclusive one, so two processes doing so cannot deadlock.
type partsLock struct {
	mu    sync.Mutex
	f     *os.File
	users int  // tests of this process holding the lock shared
	held  bool // a fault test of this process holds it exclusively
}

func (l *partsLock) open(t testing.TB) bool {
	t.Helper()
	if l.f != nil {
		return true
	}
	dir := os.Getenv(EnvLockDir)
	if dir == "" {
		return false
	}
	f, err := os.OpenFile(filepath.Join(dir, "parts.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatalf("testenv: open lock: %v", err)
	}
	l.f = f
	return true
}

func (l *partsLock) flock(t testing.TB, how int) {
	t.Helper()
	for {
		err := syscall.Flock(int(l.f.Fd()), how)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			t.Fatalf("testenv: flock: %v", err)
		}
		return
	}
}

func (l *partsLock) shared(t testing.TB) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.open(t) {
		return
	}
	if l.users == 0 && !l.held {
		l.flock(t, syscall.LOCK_SH)
	}
	l.users++
	t.Cleanup(func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.users--
		if l.users == 0 && !l.held {
			l.flock(t, syscall.LOCK_UN)
		}
	})
}

func (l *partsLock) exclusive(t testing.TB) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.open(t) || l.held {
		return
	}
	l.flock(t, syscall.LOCK_EX)
	l.held = true
	t.Cleanup(func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.held = false
		if l.users > 0 {
			l.flock(t, syscall.LOCK_SH)
		} else {
			l.flock(t, syscall.LOCK_UN)
		}
	})
}
