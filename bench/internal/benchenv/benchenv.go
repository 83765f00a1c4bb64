// Package benchenv starts what the model-cache benchmarks need: the loader binary as a
// process, the reference Resource API in the benchmark's own process, MinIO, and the line that
// says which machine the figures come from.
package benchenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"

	"github.com/azaion/loader/internal/refapi"
)

// The benchmarks' account on the reference API.
const (
	Email    = "bench@azaion.local"
	Password = "bench-password"
)

// Machine is the line that says where the figures were measured.
func Machine() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	load := "unknown"
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			load = strings.Join(f[:3], " ")
		}
	}
	return fmt.Sprintf("Machine: %s/%s, %d CPUs (%s), load average %s, %s.", runtime.GOOS, runtime.GOARCH,
		runtime.NumCPU(), cpu, load, runtime.Version())
}

// BuildLoader builds cmd/azaion-loader into dir and returns the binary's path.
func BuildLoader(dir string) (string, error) {
	bin := filepath.Join(dir, "azaion-loader")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/azaion/loader/cmd/azaion-loader").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
}

// RefAPI runs the reference Resource API on loopback with the benchmarks' account; cdn is
// what it serves as cdn.yaml. stop ends it.
func RefAPI(dataDir string, cdn refapi.CDNSettings) (srv *refapi.Server, url string, stop func(), err error) {
	srv, err = refapi.New(refapi.Config{
		Users:   []refapi.User{{ID: "1", Email: Email, Password: Password, Role: "Admin"}},
		DataDir: dataDir,
		CDN:     cdn,
	})
	if err != nil {
		return nil, "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", nil, err
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ln)
	return srv, "http://" + ln.Addr().String(), func() { hs.Close() }, nil
}

// Loader is `azaion-loader serve` running as a child process.
type Loader struct {
	URL  string
	cmd  *exec.Cmd
	done chan struct{}
}

// StartLoader runs bin serve on a free loopback port with env added, and waits until it
// listens.
func StartLoader(bin string, env ...string) (*Loader, error) {
	// An empty LOG_DIR in the environment counts as unset (the default ./Logs): only the flag
	// turns the log files off.
	cmd := exec.Command(bin, "serve", "--log-dir", "")
	cmd.Env = append(os.Environ(), append([]string{"LISTEN_ADDR=127.0.0.1:0"}, env...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	l := &Loader{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(l.done) }()
	addr := regexp.MustCompile(`msg=listening addr=(\S+)`)
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		if m := addr.FindStringSubmatch(sc.Text()); m != nil {
			l.URL = "http://" + m[1]
			go io.Copy(io.Discard, stderr)
			return l, nil
		}
	}
	l.Kill()
	return nil, errors.New("the loader did not start")
}

// Kill ends the loader with SIGKILL, as a power cut would.
func (l *Loader) Kill() {
	l.cmd.Process.Kill()
	<-l.done
}

// Login logs the loader in with the benchmarks' account.
func (l *Loader) Login() error {
	code, body, err := l.Post(context.Background(), "/login", fmt.Sprintf(`{"email":%q,"password":%q}`, Email, Password), io.Discard)
	if err == nil && code != http.StatusOK {
		err = fmt.Errorf("login: %d %s", code, body)
	}
	return err
}

// Post sends a JSON body to path; the answer's body goes to w when it is 200, and is returned
// otherwise.
func (l *Loader) Post(ctx context.Context, path, body string, w io.Writer) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.URL+path, strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	_, err = io.Copy(w, resp.Body)
	return resp.StatusCode, "", err
}
