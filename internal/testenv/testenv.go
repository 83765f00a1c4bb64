// Package testenv tells integration tests where the real parts are: dockerd, MinIO and openssl.
//
// scripts/test.sh installs and starts the parts and exports their addresses. A test that needs a
// part it cannot find is skipped on a developer's machine, and fails when CI=true: a CI run must
// never count a skipped integration test as passing.
package testenv

import (
	"os"
	"os/exec"
	"strings"
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
)

// MinIOServer is a running MinIO reachable over plain HTTP on loopback.
type MinIOServer struct {
	Endpoint  string // host:port
	AccessKey string
	SecretKey string
}

// URL is the endpoint with its scheme, as a cdn.yaml "host" would carry it.
func (m MinIOServer) URL() string { return "http://" + m.Endpoint }

// Missing skips the test, or fails it under CI=true, because a real part is not available.
func Missing(t testing.TB, what string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not available, and CI=true: run the tests through scripts/test.sh", what)
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

// StopMinIO stops the test MinIO and registers a cleanup that starts it again, so a fault test
// leaves the server running for the tests after it. Tests that call it must not run in parallel
// with other MinIO tests.
func StopMinIO(t testing.TB) { t.Helper(); control(t, EnvMinIOCtl, "MinIO") }

// StartMinIO starts the test MinIO again after StopMinIO, waiting until it answers.
func StartMinIO(t testing.TB) { t.Helper(); ctl(t, EnvMinIOCtl, "start") }

// StopDocker stops the test dockerd and registers a cleanup that starts it again.
func StopDocker(t testing.TB) { t.Helper(); control(t, EnvDockerCtl, "dockerd") }

// StartDocker starts the test dockerd again after StopDocker, waiting until it answers.
func StartDocker(t testing.TB) { t.Helper(); ctl(t, EnvDockerCtl, "start") }

func control(t testing.TB, env, what string) {
	t.Helper()
	if os.Getenv(env) == "" {
		Missing(t, what+" control ("+env+")")
	}
	ctl(t, env, "stop")
	t.Cleanup(func() { ctl(t, env, "start") })
}

// ctl runs "$env stop|start"; the script it names is idempotent and waits until the part is
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
