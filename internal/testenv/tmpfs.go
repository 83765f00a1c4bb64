package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Tmpfs mounts a tmpfs of the given size (mount's size= syntax, e.g. "8m") and returns its
// directory: a small disk that fills up for real. It is unmounted when the test ends. It needs
// root: elsewhere the test is skipped, or fails under CI. Under scripts/test.sh the mount point
// is inside the run's state directory, so a run killed before its cleanup leaves nothing
// mounted for long: scripts/parts.sh reap-stale unmounts it.
func Tmpfs(t testing.TB, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "root (to mount a tmpfs)")
	}
	base := os.Getenv(EnvLockDir)
	if base == "" {
		base = t.TempDir()
	}
	dir, err := os.MkdirTemp(base, "tmpfs-")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("mount a tmpfs at %s: %v\n%s", dir, err, out)
		}
		t.Skipf("cannot mount a tmpfs here: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			// Still busy (a process the test started has it open): detach it.
			if out2, err2 := exec.Command("umount", "-l", dir).CombinedOutput(); err2 != nil {
				t.Errorf("umount %s: %v\n%s\n%s", dir, err, out, out2)
			}
		}
		os.Remove(dir)
	})
	return filepath.Clean(dir)
}
