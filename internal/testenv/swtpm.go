package testenv

import (
	"crypto/sha256"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport/linuxudstpm"
)

// Environment variables of the shared TPM simulator, set by scripts/test.sh.
const (
	EnvSWTPM    = "AZAION_TEST_SWTPM"     // the socket of a running swtpm (swtpm socket --server type=unixio)
	EnvSWTPMCtl = "AZAION_TEST_SWTPM_CTL" // "parts.sh swtpm STATEDIR": start|stop|status
)

// SWTPM returns the TPM_DEVICE ("unix://PATH") of the TPM simulator shared by the tests of a run.
// Tests that must stop a simulator, or need a TPM nobody else uses, start their own with NewSWTPM.
func SWTPM(t testing.TB) string {
	t.Helper()
	p := os.Getenv(EnvSWTPM)
	if p == "" {
		Missing(t, "swtpm ("+EnvSWTPM+")")
	}
	parts.shared(t)
	return "unix://" + p
}

// SWTPMInstance is a TPM simulator started by one test: a TPM of its own, with fresh seeds, so
// it is a different TPM from every other instance.
type SWTPMInstance struct {
	Dir    string // state directory; the socket is Dir/sock
	Device string // TPM_DEVICE for it: "unix://Dir/sock"
	cmd    *exec.Cmd
	done   chan struct{}
	mu     sync.Mutex
	paused bool
}

// NewSWTPM starts a fresh swtpm in a temporary state directory and stops it when the test ends.
func NewSWTPM(t testing.TB) *SWTPMInstance {
	t.Helper()
	bin, err := exec.LookPath("swtpm")
	if err != nil {
		Missing(t, "swtpm")
	}
	// A short directory: a unix socket path must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "swtpm-")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "sock")
	s := &SWTPMInstance{Dir: dir, Device: "unix://" + sock, done: make(chan struct{})}
	logPath := filepath.Join(dir, "swtpm.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	log := func() string { b, _ := os.ReadFile(logPath); return string(b) }
	s.cmd = exec.Command(bin, "socket", "--tpm2",
		"--tpmstate", "dir="+dir,
		"--server", "type=unixio,path="+sock,
		"--ctrl", "type=unixio,path="+sock+".ctrl",
		"--flags", "not-need-init,startup-clear")
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	if err := s.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		t.Fatalf("start swtpm: %v", err)
	}
	go func() { s.cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		s.Continue()
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			s.cmd.Process.Kill()
			<-s.done
		}
		os.RemoveAll(dir)
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close() // swtpm serves one connection at a time: let go at once
			return s
		}
		select {
		case <-s.done:
			t.Fatalf("swtpm exited while starting: %v\n%s", s.cmd.ProcessState, log())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("swtpm did not listen on %s within 30s\n%s", sock, log())
		}
	}
}

// Pause stops the simulator with SIGSTOP: it keeps accepting connections (the kernel does) but
// never answers. The test's cleanup continues it.
func (s *SWTPMInstance) Pause(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP swtpm: %v", err)
	}
	s.paused = true
	t.Cleanup(s.Continue)
}

// Continue sends SIGCONT after Pause.
func (s *SWTPMInstance) Continue() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.paused {
		s.cmd.Process.Signal(syscall.SIGCONT)
		s.paused = false
	}
}

// ExtendPCR extends a SHA-256 PCR of the simulator, as firmware measuring a new boot component
// would, through go-tpm's own socket transport rather than the loader's.
func (s *SWTPMInstance) ExtendPCR(t testing.TB, pcr int) {
	t.Helper()
	tr, err := linuxudstpm.Open(filepath.Join(s.Dir, "sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	d := sha256.Sum256([]byte("a firmware update"))
	if _, err := (tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)},
		Digests:   tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: d[:]}}},
	}).Execute(tr); err != nil {
		t.Fatalf("PCR_Extend %d: %v", pcr, err)
	}
}
