// Package loaderenv stages what the bench programs measure: the azaion-loader binary as a child
// process (its own RSS, its own cores), in front of the reference Resource API in the bench's
// process, with resources placed the way a device holds them (small part upstream, big part
// in the cache). With NoCDN the CDN is a port nobody listens on: a /load that reached for it
// would fail, so every measured /load is served from the cache; the cache benches point the
// reference API's cdn.yaml at a MinIO instead.
package loaderenv

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/azaion/loader/internal/refapi"
	"github.com/azaion/loader/internal/resources"
	"github.com/azaion/loader/internal/security"
)

// The account the benches log in with, and the folder their resources live in.
const (
	Email    = "bench@azaion.local"
	Password = "bench-password"
	Folder   = "models"
)

// SPEC §5's split point.
const (
	splitMax   = 3072
	splitRatio = 0.3
)

// Binary returns the azaion-loader to measure: $AZAION_BENCH_BIN (scripts/bench.sh builds it
// once), else a fresh go build into dir.
func Binary(dir string) (string, error) {
	if b := os.Getenv("AZAION_BENCH_BIN"); b != "" {
		return b, nil
	}
	bin := filepath.Join(dir, "azaion-loader")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/azaion/loader/cmd/azaion-loader").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
}

// RefAPI is the reference Resource API served in this process.
type RefAPI struct {
	*refapi.Server
	URL string
	srv *http.Server
}

// NoCDN is a cdn.yaml whose host is a port nobody listens on.
var NoCDN = refapi.CDNSettings{
	Host:                "http://127.0.0.1:1",
	DownloaderAccessKey: "bench", DownloaderAccessSecret: "bench-secret",
	UploaderAccessKey: "bench", UploaderAccessSecret: "bench-secret",
}

// StartRefAPI serves the reference API on loopback with the bench account; its data lives in
// dir, and it serves cdn as cdn.yaml.
func StartRefAPI(dir string, cdn refapi.CDNSettings) (*RefAPI, error) {
	ref, err := refapi.New(refapi.Config{
		Users:   []refapi.User{{ID: "1", Email: Email, Password: Password, Role: "Admin"}},
		DataDir: dir,
		CDN:     cdn,
	})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &RefAPI{Server: ref, URL: "http://" + ln.Addr().String(), srv: &http.Server{Handler: ref, ReadHeaderTimeout: 10 * time.Second}}
	go r.srv.Serve(ln)
	return r, nil
}

// Close stops serving.
func (r *RefAPI) Close() { r.srv.Close() }

// Resource is a resource placed for a bench.
type Resource struct {
	Name    string
	Size    int64
	Sum     [32]byte // of the plaintext
	EncPath string   // IV ‖ AES-256-CBC of the whole plaintext, for openssl to decrypt
}

// Prepare makes a resource of size pseudo-random bytes (seed picks them), writes its
// ciphertext to dir, puts its small part on the reference API and its big part into the
// loader's cache at cacheDir.
func (r *RefAPI) Prepare(cacheDir, dir, name string, size int64, seed uint64) (Resource, error) {
	res := Resource{Name: name, Size: size, EncPath: filepath.Join(dir, name+".enc")}
	key := security.KeyFromString(security.ResourceKey())
	f, err := os.Create(res.EncPath)
	if err != nil {
		return res, err
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	enc, err := security.NewEncrypter(bw, key)
	if err != nil {
		return res, err
	}
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(enc, h), mrand.NewChaCha8([32]byte{byte(seed), 'a', 'z', 'a', 'i', 'o', 'n'}), size); err != nil {
		return res, err
	}
	if err := enc.Close(); err != nil {
		return res, err
	}
	if err := bw.Flush(); err != nil {
		return res, err
	}
	copy(res.Sum[:], h.Sum(nil))
	clen, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return res, err
	}
	if clen != security.EncryptedSize(size) {
		return res, fmt.Errorf("ciphertext of %d bytes, want %d", clen, security.EncryptedSize(size))
	}
	n := min(int64(splitMax), int64(splitRatio*float64(clen)))
	small := make([]byte, n)
	if _, err := f.ReadAt(small, 0); err != nil {
		return res, err
	}
	if err := r.PutResource(Folder, name+".small", bytes.NewReader(small)); err != nil {
		return res, err
	}
	cache, err := resources.New(nil, resources.Options{CacheDir: cacheDir})
	if err != nil {
		return res, err
	}
	defer cache.Close()
	if err := cache.Preload(Folder, name, small, io.NewSectionReader(f, n, clen-n)); err != nil {
		return res, err
	}
	return res, f.Close()
}

// Loader is `azaion-loader serve` running as a child process.
type Loader struct {
	Cmd  *exec.Cmd
	URL  string
	done chan struct{} // closed once it has exited (Cmd.ProcessState is set)
}

// StartLoader runs `bin serve ARGS...` on a free loopback port with env added, and waits until
// it listens. Its stderr is drained; LOG_DIR in env keeps its log (args "--log-dir", "" turns
// the files off: an empty LOG_DIR counts as unset, the default ./Logs).
func StartLoader(bin string, args []string, env ...string) (*Loader, error) {
	cmd := exec.Command(bin, append([]string{"serve"}, args...)...)
	cmd.Env = append(os.Environ(), append([]string{"LISTEN_ADDR=127.0.0.1:0", "LOG_LEVEL=info"}, env...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	l := &Loader{Cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(l.done) }()
	addrRE := regexp.MustCompile(`msg=listening addr=(\S+)`)
	sc := bufio.NewScanner(stderr)
	var seen strings.Builder
	for sc.Scan() {
		seen.WriteString(sc.Text() + "\n")
		if m := addrRE.FindStringSubmatch(sc.Text()); m != nil {
			l.URL = "http://" + m[1]
			go io.Copy(io.Discard, stderr) // keep draining
			return l, nil
		}
	}
	l.Kill()
	return nil, fmt.Errorf("the loader did not start:\n%s", seen.String())
}

// Kill ends the loader with SIGKILL (as a power cut would) and waits for it.
func (l *Loader) Kill() {
	l.Cmd.Process.Kill()
	<-l.done
}

// Login logs the loader in as the bench account.
func (l *Loader) Login() error {
	code, body, err := l.Post(context.Background(), "/login", fmt.Sprintf(`{"email":%q,"password":%q}`, Email, Password), io.Discard)
	if err != nil {
		return fmt.Errorf("login: %w", err)
	}
	if code != http.StatusOK {
		return fmt.Errorf("login: %d %s", code, body)
	}
	return nil
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

// ProcCPU is the CPU time (user and system) process pid has used so far, from
// /proc/<pid>/stat in clock ticks (100 per second on Linux); 0 if it cannot be read.
func ProcCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name may hold spaces; the fields after its closing parenthesis do not.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * (time.Second / 100)
}

// ProcStatus reads a "kB" field of /proc/<pid>/status (VmRSS, VmHWM), in bytes; -1 when absent.
func ProcStatus(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return -1
			}
			return n << 10
		}
	}
	return -1
}
