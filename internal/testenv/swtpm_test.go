package testenv_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/azaion/loader/internal/device"
	"github.com/azaion/loader/internal/testenv"
	"github.com/azaion/loader/internal/tpm"
)

func TestSWTPM(t *testing.T) {
	dev := testenv.SWTPM(t)
	info, err := (&tpm.Client{Device: dev, Timeout: 10 * time.Second}).Info(context.Background())
	if err != nil {
		t.Fatalf("the shared swtpm at %s does not answer: %v", dev, err)
	}
	t.Logf("shared swtpm: %+v", info)
}

// TestNewSWTPMIsAnotherTPM: two instances are two TPMs (their storage keys differ), each answers
// while the other is paused, and Continue wakes a paused one.
func TestNewSWTPMIsAnotherTPM(t *testing.T) {
	a, b := testenv.NewSWTPM(t), testenv.NewSWTPM(t)
	ctx := context.Background()
	ca, cb := &tpm.Client{Device: a.Device, Timeout: 10 * time.Second}, &tpm.Client{Device: b.Device, Timeout: 10 * time.Second}
	na, err := ca.StorageKeyName(ctx, device.SRKECC)
	if err != nil {
		t.Fatal(err)
	}
	nb, err := cb.StorageKeyName(ctx, device.SRKECC)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(na, nb) {
		t.Fatal("two fresh simulators made the same storage key: they are the same TPM")
	}
	if again, err := ca.StorageKeyName(ctx, device.SRKECC); err != nil || !bytes.Equal(again, na) {
		t.Fatalf("the storage key is not recreated identically: %v", err)
	}

	a.Pause(t)
	short := &tpm.Client{Device: a.Device, Timeout: 500 * time.Millisecond}
	if _, err := short.Info(ctx); !errors.Is(err, tpm.ErrNotAnswering) {
		t.Fatalf("a paused simulator: got %v, want ErrNotAnswering", err)
	}
	if _, err := cb.Info(ctx); err != nil {
		t.Fatalf("the other simulator: %v", err)
	}
	a.Continue()
	if _, err := ca.Info(ctx); err != nil {
		t.Fatalf("after Continue: %v", err)
	}
}

// TestSWTPMControl: the control script stops and starts the shared simulator, keeping its state
// (the same TPM after a restart).
func TestFaultSWTPMStopStart(t *testing.T) {
	dev := testenv.SWTPM(t)
	ctl := strings.Fields(os.Getenv(testenv.EnvSWTPMCtl))
	if len(ctl) == 0 {
		testenv.Missing(t, testenv.EnvSWTPMCtl)
	}
	c := &tpm.Client{Device: dev, Timeout: 10 * time.Second}
	ctx := context.Background()
	before, err := c.StorageKeyName(ctx, device.SRKECC)
	if err != nil {
		t.Fatal(err)
	}
	testenv.StopSWTPM(t)
	if _, err := (&tpm.Client{Device: dev, Timeout: time.Second}).Info(ctx); err == nil {
		t.Fatal("the simulator answers after stop")
	}
	testenv.StartSWTPM(t)
	after, err := c.StorageKeyName(ctx, device.SRKECC)
	if err != nil || !bytes.Equal(after, before) {
		t.Fatalf("after a restart: %v; same storage key: %v", err, bytes.Equal(after, before))
	}
	if out, err := exec.Command(ctl[0], append(ctl[1:], "status")...).CombinedOutput(); err != nil {
		t.Fatalf("status after start: %v\n%s", err, out)
	}
}
