package tpm_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/azaion/loader/internal/device"
	"github.com/azaion/loader/internal/testenv"
	"github.com/azaion/loader/internal/tpm"
)

func client(dev string) *tpm.Client { return &tpm.Client{Device: dev, Timeout: 20 * time.Second} }

func TestSealUnsealRoundTrip(t *testing.T) {
	c := client(testenv.SWTPM(t))
	ctx := context.Background()
	for _, srk := range []string{device.SRKECC, device.SRKRSA} {
		// 128 bytes fit one sealed object; 129 and more take several.
		for _, n := range []int{1, 128, 129, 300, device.MaxObjects * 128} {
			data := make([]byte, n)
			for i := range data {
				data[i] = byte(i*7 + n)
			}
			s, err := c.Seal(ctx, data, tpm.SealOptions{SRK: srk})
			if err != nil {
				t.Fatalf("%s, %d bytes: seal: %v", srk, n, err)
			}
			if want := (n + 127) / 128; len(s.Objects) != want || s.SRK != srk || len(s.PCRs) != 0 {
				t.Errorf("%s, %d bytes: %d objects, SRK %s, PCRs %v; want %d objects", srk, n, len(s.Objects), s.SRK, s.PCRs, want)
			}
			for _, o := range s.Objects {
				if bytes.Contains(o.Public, data[:min(n, 8)]) && n >= 8 || bytes.Contains(o.Private, data[:min(n, 8)]) && n >= 8 {
					t.Errorf("%s, %d bytes: a sealed object holds the plaintext", srk, n)
				}
			}
			// Through the file format, as a device would read it back.
			back, err := device.ParseSealed(s.Marshal())
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.Unseal(ctx, back)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("%s, %d bytes: unseal: %v (equal: %v)", srk, n, err, bytes.Equal(got, data))
			}
		}
	}
	if _, err := c.Seal(ctx, make([]byte, device.MaxObjects*128+1), tpm.SealOptions{}); err == nil {
		t.Error("sealed more than a sealed file can hold")
	}
}

func TestUnsealWithAnotherTPM(t *testing.T) {
	ctx := context.Background()
	a, b := testenv.NewSWTPM(t), testenv.NewSWTPM(t)
	s, err := client(a.Device).Seal(ctx, []byte("AZAION_DEVICE_EMAIL=a\n"), tpm.SealOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = client(b.Device).Unseal(ctx, s)
	if !errors.Is(err, device.ErrSealedForAnotherTPM) {
		t.Fatalf("unseal on another TPM: got %v, want ErrSealedForAnotherTPM", err)
	}
	// Even when the file claims the other TPM's storage key (forged), the object does not load
	// there: its integrity is bound to the sealing TPM's seed, so it is refused as damaged.
	name, err := client(b.Device).StorageKeyName(ctx, device.SRKECC)
	if err != nil {
		t.Fatal(err)
	}
	forged := s
	forged.SRKName = name
	if _, err := client(b.Device).Unseal(ctx, forged); !errors.Is(err, device.ErrSealedDamaged) {
		t.Fatalf("forged storage key name: got %v, want ErrSealedDamaged", err)
	}
}

// TestUnsealDamagedObject changes every byte of the public and private areas in turn: the TPM
// that sealed them refuses each, and that is reported as damaged, never as another TPM's, and
// never unsealed.
func TestUnsealDamagedObject(t *testing.T) {
	c := client(testenv.SWTPM(t))
	ctx := context.Background()
	s, err := c.Seal(ctx, []byte("the identity"), tpm.SealOptions{})
	if err != nil {
		t.Fatal(err)
	}
	o := s.Objects[0]
	for _, area := range []struct {
		name string
		data []byte
	}{{"public", o.Public}, {"private", o.Private}} {
		for i := range area.data {
			bad := bytes.Clone(area.data)
			bad[i] ^= 0x01
			d := s
			d.Objects = []device.Object{o}
			if area.name == "public" {
				d.Objects[0].Public = bad
			} else {
				d.Objects[0].Private = bad
			}
			got, err := c.Unseal(ctx, d)
			if !errors.Is(err, device.ErrSealedDamaged) {
				t.Fatalf("%s byte %d changed: got %q, %v; want ErrSealedDamaged", area.name, i, got, err)
			}
		}
	}
}

func TestPCRBinding(t *testing.T) {
	a := testenv.NewSWTPM(t)
	c := client(a.Device)
	ctx := context.Background()
	data := []byte("bound to PCR 7")
	s, err := c.Seal(ctx, data, tpm.SealOptions{PCRs: []int{7}})
	if err != nil {
		t.Fatal(err)
	}
	free, err := c.Seal(ctx, data, tpm.SealOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // a policy session is used up by an unseal: a second works too
		if got, err := c.Unseal(ctx, s); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("unseal %d while PCR 7 is unchanged: %v", i+1, err)
		}
	}
	a.ExtendPCR(t, 0) // another PCR: no matter
	if _, err := c.Unseal(ctx, s); err != nil {
		t.Fatalf("after extending PCR 0: %v", err)
	}
	a.ExtendPCR(t, 7)
	_, err = c.Unseal(ctx, s)
	if !errors.Is(err, device.ErrPCRsChanged) || !strings.Contains(err.Error(), "sha256:7") {
		t.Fatalf("after extending PCR 7: got %v, want ErrPCRsChanged naming the PCR", err)
	}
	if got, err := c.Unseal(ctx, free); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("a seal without PCRs after extending PCR 7: %v", err)
	}
}

func TestInfo(t *testing.T) {
	info, err := client(testenv.SWTPM(t)).Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// swtpm (libtpms) reports "IBM " as its manufacturer, "SW   TPM" as its vendor string.
	if info.Manufacturer != "IBM" || !strings.Contains(info.Vendor, "SW") {
		t.Errorf("manufacturer %q, vendor %q", info.Manufacturer, info.Vendor)
	}
	if !strings.Contains(info.Firmware, "(0x") || strings.HasPrefix(info.Firmware, "0.0.0.0") {
		t.Errorf("firmware %q", info.Firmware)
	}
}

func TestNoTPM(t *testing.T) {
	ctx := context.Background()
	for _, dev := range []string{"/nonexistent/tpmrm0", "unix:///nonexistent/sock"} {
		_, err := (&tpm.Client{Device: dev, Timeout: 5 * time.Second}).Info(ctx)
		if !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: got %v, want not exist", dev, err)
		}
	}
}

// TestNotAnsweringCutsTheCall: a stopped simulator accepts connections (the kernel does) and
// never answers; every call ends at its timeout with ErrNotAnswering, leaves no goroutine and no
// descriptor behind, and what it left queued in the simulator does not block later unseals.
func TestNotAnsweringCutsTheCall(t *testing.T) {
	a := testenv.NewSWTPM(t)
	ctx := context.Background()
	s, err := client(a.Device).Seal(ctx, []byte("the identity"), tpm.SealOptions{})
	if err != nil {
		t.Fatal(err)
	}
	goroutines, fds := runtime.NumGoroutine(), openFDs(t)
	a.Pause(t)
	short := &tpm.Client{Device: a.Device, Timeout: 300 * time.Millisecond}
	for i := 0; i < 4; i++ { // more than the simulator's object slots
		_, err := short.Unseal(ctx, s)
		if !errors.Is(err, tpm.ErrNotAnswering) || !strings.Contains(err.Error(), "within 300ms") {
			t.Fatalf("unseal %d on a stopped TPM: got %v, want ErrNotAnswering", i+1, err)
		}
	}
	// A cancelled context (SIGTERM at start) ends the call too, with the context's error.
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { _, err := client(a.Device).Info(cctx); done <- err }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: got %v", err)
	}
	waitFor(t, "goroutines back to the baseline", func() bool { return runtime.NumGoroutine() <= goroutines })
	waitFor(t, "descriptors back to the baseline", func() bool { return openFDs(t) <= fds })

	a.Continue()
	for i := 0; i < 4; i++ {
		if got, err := client(a.Device).Unseal(ctx, s); err != nil || string(got) != "the identity" {
			t.Fatalf("unseal %d after the simulator woke up: %v", i+1, err)
		}
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
