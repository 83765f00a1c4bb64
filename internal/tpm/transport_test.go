package tpm

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"golang.org/x/sys/unix"

	"github.com/azaion/loader/internal/testenv"
)

// chardevTPM runs "swtpm chardev" on one end of a socket pair and returns the other end: a
// descriptor that behaves as a TPM device does (a command written whole, the response read whole
// once it polls readable), for the device transport. The returned process may be stopped.
func chardevTPM(t *testing.T) (int, *os.Process) {
	t.Helper()
	bin, err := exec.LookPath("swtpm")
	if err != nil {
		testenv.Missing(t, "swtpm")
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	theirs := os.NewFile(uintptr(fds[1]), "swtpm-end")
	dir := t.TempDir()
	cmd := exec.Command(bin, "chardev", "--tpm2", "--fd", "3", "--tpmstate", "dir="+dir, "--flags", "not-need-init,startup-clear")
	cmd.ExtraFiles = []*os.File{theirs}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	theirs.Close()
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGCONT)
		cmd.Process.Kill()
		<-done
	})
	if err := unix.SetNonblock(fds[0], true); err != nil {
		t.Fatal(err)
	}
	return fds[0], cmd.Process
}

func getManufacturer(c *conn) error {
	_, err := tpm2.GetCapability{Capability: tpm2.TPMCapTPMProperties, Property: uint32(tpm2.TPMPTManufacturer), PropertyCount: 1}.Execute(c)
	return err
}

// TestDeviceTransport drives the device transport (non-blocking descriptor, poll bounded by the
// context, a pipe to wake it) against a simulator: commands work, and a stopped TPM or a
// cancelled context end the wait at once.
func TestDeviceTransport(t *testing.T) {
	fd, proc := chardevTPM(t)
	d, err := newDevConn(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := 0; i < 3; i++ {
		if err := getManufacturer(&conn{ctx: ctx, raw: d}); err != nil {
			t.Fatalf("command %d: %v", i+1, err)
		}
	}

	if err := proc.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancelShort()
	start := time.Now()
	if err := getManufacturer(&conn{ctx: short, raw: d}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("stopped TPM: got %v, want the deadline", err)
	}
	t.Logf("a stopped TPM cut after %v (deadline 300ms)", time.Since(start))

	cctx, cancelNow := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- getManufacturer(&conn{ctx: cctx, raw: d}) }()
	cancelNow()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: got %v", err)
	}
	// The unanswered commands leave the descriptor to a background close that ends with the
	// TPM; Close does not wait for it.
	closed := make(chan error, 1)
	go func() { closed <- d.Close() }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close waited for a stopped TPM")
	}
}

func TestDeviceOpenErrors(t *testing.T) {
	if _, err := openDevice("/nonexistent/tpmrm0"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("got %v", err)
	}
}
