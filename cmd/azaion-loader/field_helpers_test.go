package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// procClient talks to loader processes. It has a timeout so that a hung loader fails a test
// instead of hanging it.
var procClient = &http.Client{Timeout: time.Minute}

// call sends a request to the process and returns the status, the body and how long the
// answer took.
func (p *process) call(t testing.TB, method, path, body string) (int, []byte, time.Duration) {
	t.Helper()
	code, b, took, err := p.try(method, path, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return code, b, took
}

// try is call for goroutines other than the test's: it returns the error.
func (p *process) try(method, path, body string) (int, []byte, time.Duration, error) {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, p.url+path, r)
	if err != nil {
		return 0, nil, 0, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	start := time.Now()
	resp, err := procClient.Do(req)
	if err != nil {
		return 0, nil, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, time.Since(start), err
}

// getJSON decodes GET path into v and returns how long the answer took.
func (p *process) getJSON(t testing.TB, path string, v any) time.Duration {
	t.Helper()
	code, body, took := p.call(t, http.MethodGet, path, "")
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, code, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v: %s", path, err, body)
	}
	return took
}

// procStatus is GET /status with the unattended block of SPEC §10.
type procStatus struct {
	Authenticated bool   `json:"authenticated"`
	Role          string `json:"role"`
	Unattended    struct {
		State         string  `json:"state"`
		Attempts      *int    `json:"attempts"`
		NextAttemptAt *string `json:"nextAttemptAt"`
		LastError     *string `json:"lastError"`
	} `json:"unattended"`
}

func (s procStatus) String() string {
	u := s.Unattended
	str := func(p *string) string {
		if p == nil {
			return "null"
		}
		return *p
	}
	n := -1
	if u.Attempts != nil {
		n = *u.Attempts
	}
	return fmt.Sprintf("authenticated=%v unattended{state=%s attempts=%d next=%s lastError=%s}", s.Authenticated, u.State, n, str(u.NextAttemptAt), str(u.LastError))
}

func (p *process) status(t testing.TB) procStatus {
	t.Helper()
	var st procStatus
	p.getJSON(t, "/status", &st)
	if st.Unattended.State == "" || st.Unattended.Attempts == nil {
		t.Fatalf("GET /status has no unattended block: %v", st)
	}
	return st
}

func (p *process) unlockStatus(t testing.TB) ulStatus {
	t.Helper()
	var st ulStatus
	p.getJSON(t, "/unlock/status", &st)
	return st
}

func (s procStatus) attempts() int { return *s.Unattended.Attempts }

// pollStatus polls GET /status until cond holds, for at most limit.
func (p *process) pollStatus(t testing.TB, what string, limit time.Duration, cond func(procStatus) bool) procStatus {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		st := p.status(t)
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %v after %v\n%s", what, st, limit, p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pollUnlock polls GET /unlock/status until cond holds, for at most limit.
func (p *process) pollUnlock(t testing.TB, what string, limit, every time.Duration, cond func(ulStatus) bool) ulStatus {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		st := p.unlockStatus(t)
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: unlock status %v after %v\n%s", what, st, limit, p.stderr.String())
		}
		time.Sleep(every)
	}
}

var (
	refapiOnce sync.Once
	refapiPath string
	refapiErr  error
)

// refapiBinary builds cmd/azaion-refapi once per test run, next to the loader's binary.
func refapiBinary(t *testing.T) string {
	t.Helper()
	dir := filepath.Dir(binary(t))
	refapiOnce.Do(func() {
		refapiPath = filepath.Join(dir, "azaion-refapi")
		out, err := exec.Command("go", "build", "-o", refapiPath, "../azaion-refapi").CombinedOutput()
		if err != nil {
			refapiErr = fmt.Errorf("go build azaion-refapi: %v\n%s", err, out)
		}
	})
	if refapiErr != nil {
		t.Fatal(refapiErr)
	}
	return refapiPath
}

// refapiProcess is the reference Resource API running as a process of its own, so that a test
// can stop it with SIGSTOP.
type refapiProcess struct {
	cmd *exec.Cmd
	url string
}

// startRefapi runs azaion-refapi with the test account (CompanionPC) and the key fragment.
func startRefapi(t *testing.T, fragment []byte) *refapiProcess {
	t.Helper()
	dir := t.TempDir()
	users, _ := yaml.Marshal([]map[string]string{{"email": testEmail, "password": testPassword, "role": "CompanionPC"}})
	if err := os.WriteFile(filepath.Join(dir, "users.yaml"), users, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "fragment"), fragment, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(refapiBinary(t), "--listen", "127.0.0.1:0")
	cmd.Env = append(os.Environ(),
		"AZAION_REFAPI_USERS="+filepath.Join(dir, "users.yaml"),
		"AZAION_REFAPI_DATA="+filepath.Join(dir, "data"),
		"AZAION_REFAPI_KEY_FRAGMENT_FILE="+filepath.Join(dir, "fragment"),
		"AZAION_REFAPI_CDN_HOST=http://127.0.0.1:1",
		"AZAION_REFAPI_CDN_DOWNLOADER_KEY=k", "AZAION_REFAPI_CDN_DOWNLOADER_SECRET=s",
		"AZAION_REFAPI_CDN_UPLOADER_KEY=k", "AZAION_REFAPI_CDN_UPLOADER_SECRET=s")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGCONT)
		cmd.Process.Kill()
		<-done
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	url, ok := strings.CutPrefix(strings.TrimSpace(line), "azaion-refapi listening on ")
	if err != nil || !ok {
		t.Fatalf("azaion-refapi did not start: %q %v", line, err)
	}
	go io.Copy(io.Discard, stdout)
	return &refapiProcess{cmd: cmd, url: url}
}

func (r *refapiProcess) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := r.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}
