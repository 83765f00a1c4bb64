package main

// Tests of `azaion-loader unlock` (SPEC §8) run in-process through run(), against the reference
// Resource API and the real dockerd.

import (
	"bytes"
	"encoding/hex"
	"os"
	"strings"
	"testing"

	"github.com/azaion/loader/internal/docker/dockertest"
	"github.com/azaion/loader/internal/refapi"
)

// clRun runs `azaion-loader unlock` for the test env's reference API with env as its
// environment (and stdin, when not nil), returning stdout, stderr and the error.
func clRun(t *testing.T, e *testEnv, env map[string]string, stdin []byte, extra ...string) (string, string, error) {
	t.Helper()
	args := []string{"unlock",
		"--resource-api-url", e.refSrv.URL,
		"--images-path", e.cfg.ImagesPath,
		"--docker-host", e.cfg.DockerHost,
		"--api-version", e.cfg.APIVersion,
		"--docker-images", strings.Join(e.cfg.DockerImages, ","),
	}
	stdout, stderr, err := runMain(stdin, func(k string) string { return env[k] }, append(args, extra...)...)
	return string(stdout), stderr, err
}

func TestUnlockCLI(t *testing.T) {
	t.Parallel()
	images := ulSpecImages[4:6]
	tag := ulTag()
	e := newTestEnv(t, envOptions{docker: true, images: images, tag: tag})
	refs := ulRefs(images, tag)
	// One image with a 16 MiB layer, so that the run lasts a few progress ticks.
	dockertest.RandomImage(t, e.cfg.DockerHost, refs[0], 16<<20)
	dockertest.RandomImage(t, e.cfg.DockerHost, refs[1], 1<<10)
	ulSaveEncrypted(t, e.cfg.DockerHost, refs, e.fragment, e.cfg.ImagesPath)

	env := map[string]string{"AZAION_PASSWORD": testPassword, "LOG_LEVEL": "debug"}
	stdout, stderr, err := clRun(t, e, env, nil, "--email", testEmail)
	t.Logf("stdout:\n%s\nstderr (progress lines only):\n%s", stdout, clProgress(stderr))
	if err != nil {
		t.Fatalf("unlock: %v", err)
	}
	if !strings.Contains(stdout, "ready") {
		t.Errorf("stdout %q does not say ready", stdout)
	}
	progress := clProgress(stderr)
	if !strings.Contains(progress, "ready") || !strings.Contains(progress, "100%") || !strings.Contains(progress, "MiB") {
		t.Errorf("no progress lines ending in ready 100%% on stderr:\n%s", stderr)
	}
	if strings.ContainsAny(stderr, "\r\033") {
		t.Error("stderr is not a terminal, yet the progress uses carriage returns or escape codes")
	}
	ulAssertLoaded(t, ulEngine(t, e.cfg.DockerHost), refs)
	if n := e.ref.Calls(refapi.EndpointKeyFragment); n != 1 {
		t.Errorf("key fragment fetched %d times, want 1", n)
	}
	noSecrets(t, []string{stdout, stderr, err2s(err)}, testPassword, hex.EncodeToString(e.fragment), hex.EncodeToString(ulSHA256(e.fragment)))

	// Again: already loaded, ready without a word upstream.
	e.ref.ResetCalls()
	stdout, _, err = clRun(t, e, env, nil, "--email", testEmail)
	if err != nil || !strings.Contains(stdout, "ready") {
		t.Errorf("second unlock: %v, stdout %q", err, stdout)
	}
	if n := e.ref.Calls(refapi.EndpointLogin); n != 0 {
		t.Errorf("second unlock logged in %d times, want 0", n)
	}
}

func TestUnlockCLIWrongPassword(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, envOptions{docker: true, images: ulSpecImages[:1], tag: ulTag()})
	if err := os.WriteFile(e.cfg.ImagesPath, make([]byte, 64), 0o600); err != nil {
		t.Fatal(err)
	}
	const wrong = "Wr0ng-Pa55-NOT-IN-OUTPUT"
	check := func(name string, stdout, stderr string, err error) {
		t.Helper()
		var exit bytes.Buffer
		if code := exitCode(err, &exit); code != 1 {
			t.Errorf("%s: exit code %d (%v), want 1", name, code, err)
		}
		if err != nil && !strings.Contains(strings.ToLower(err.Error()), "log in") {
			t.Errorf("%s: error %q does not say the login failed", name, err)
		}
		noSecrets(t, []string{stdout, stderr, err2s(err), exit.String()}, wrong, testPassword, hex.EncodeToString(e.fragment))
	}

	stdout, stderr, err := clRun(t, e, map[string]string{"AZAION_PASSWORD": wrong, "LOG_LEVEL": "debug"}, nil, "--email", testEmail)
	t.Logf("error: %v", err)
	check("AZAION_PASSWORD", stdout, stderr, err)

	// The password piped on (non-terminal) stdin.
	stdout, stderr, err = clRun(t, e, map[string]string{"LOG_LEVEL": "debug"}, []byte(wrong+"\n"), "--email", testEmail)
	check("stdin", stdout, stderr, err)

	if n := e.ref.Calls(refapi.EndpointLogin); n < 2 {
		t.Errorf("the reference API saw %d logins, want one per run", n)
	}
	if n := e.ref.Calls(refapi.EndpointKeyFragment); n != 0 {
		t.Errorf("key fragment fetched %d times with a wrong password", n)
	}

	// No --email: a usage error.
	_, _, err = clRun(t, e, map[string]string{"AZAION_PASSWORD": wrong}, nil)
	if code := exitCode(err, &bytes.Buffer{}); code != 2 {
		t.Errorf("no --email: exit %d (%v), want 2", code, err)
	}
}

// clProgress keeps the lines of stderr that are not log records.
func clProgress(stderr string) string {
	var b strings.Builder
	for _, line := range strings.Split(stderr, "\n") {
		if line != "" && !strings.HasPrefix(line, "time=") && !strings.HasPrefix(line, "{") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

func err2s(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
