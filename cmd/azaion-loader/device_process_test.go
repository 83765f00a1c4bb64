package main

// SPEC §10, device identity: the built binary refuses a device.conf it must not use.

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The device account of these tests. The values are recognisable, so a test can tell they never
// reach an output.
const (
	deviceEmail    = "device-0042@azaion.test"
	devicePassword = "Dev1ce-Pa55-NEVER-SHOWN"
)

// writeDeviceConfig writes content to a device.conf with exactly mode, and returns its path.
func writeDeviceConfig(t *testing.T, content string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "device.conf")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // past the umask
		t.Fatal(err)
	}
	return path
}

func TestDeviceConfigRefused(t *testing.T) {
	good := "# provisioned at flash time\nAZAION_DEVICE_EMAIL=" + deviceEmail + "\nAZAION_DEVICE_PASSWORD='" + devicePassword + "'\n"
	for _, c := range []struct {
		name    string
		content string
		mode    os.FileMode
		byFlag  bool
		want    []string // in the one line, besides the file's path
	}{
		{"readable by others", good, 0o644, false, []string{"accessible by group or others", "chmod 600 "}},
		{"writable by the group", good, 0o620, true, []string{"accessible by group or others", "chmod 600 "}},
		{"missing key", "AZAION_DEVICE_PASSWORD=" + devicePassword + "\n", 0o600, false, []string{"AZAION_DEVICE_EMAIL is missing"}},
		{"unknown key", "AZAION_DEVICE_EMAIL=" + deviceEmail + "\nAZAION_DEVICE_PASWORD=" + devicePassword + "\n", 0o600, true,
			[]string{"line 2: unknown key AZAION_DEVICE_PASWORD", "AZAION_DEVICE_PASSWORD"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := writeDeviceConfig(t, c.content, c.mode)
			logDir := t.TempDir()
			args := []string{"serve"}
			env := []string{"LISTEN_ADDR=127.0.0.1:0", "LOG_DIR=" + logDir, "RESOURCE_API_URL=http://127.0.0.1:1"}
			if c.byFlag {
				args = append(args, "--device-config", path)
			} else {
				env = append(env, "DEVICE_CONFIG="+path)
			}
			r := runBin(t, "", "", env, args...)
			if r.code != 2 {
				t.Fatalf("exit %d, want exit code 2; stderr:\n%s", r.code, r.stderr)
			}
			lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], path) {
				t.Fatalf("want one line naming %s, got:\n%s", path, r.stderr)
			}
			for _, w := range c.want {
				if !strings.Contains(lines[0], w) {
					t.Errorf("the line does not say %q: %s", w, lines[0])
				}
			}
			t.Logf("%s", lines[0])
			out := r.stdout + r.stderr + readDir(t, logDir)
			noSecrets(t, []string{out}, devicePassword, deviceEmail)
		})
	}
}
