// Command load benchmarks POST /load (SPEC §2, §5) with the big part already cached, through
// real HTTP on loopback, against `openssl enc -d` over the same ciphertext, in one run:
//
//	go run ./bench/load [-sizes 16MiB,256MiB] [-runs 3] [-max-rss-growth 32MiB]
//
// It builds the azaion-loader binary and starts the reference Resource API (refapi) in this
// process. For each size it makes a pseudo-random resource, encrypts it with the resource key
// (IV ‖ AES-256-CBC, SPEC §4), splits it at n = min(3072, floor(0.3·len(c))) (SPEC §5), puts
// the small part on the reference API and preloads the big part into the loader's
// MODEL_CACHE_DIR with resources.Service.Preload (as an offline-seeded device would have it).
// The CDN settings point at a closed port: a /load that reached for the CDN would fail, so
// every timed load is served from the cache.
//
// Each size gets a fresh `azaion-loader serve` child process, so its peak RSS (VmHWM in
// /proc/<pid>/status) belongs to that size alone. The child logs in, serves one untimed
// warm-up /load (whose body must hash to the plaintext's SHA-256; it also puts the big part in
// the page cache, where openssl finds it too), then -runs timed loads alternating with -runs
// timed `openssl enc -d -aes-256-cbc -K … -iv …` runs over the same ciphertext file (stdin is
// the file opened past its 16-byte IV) to /dev/null. The client reads every timed body into a
// SHA-256 (-sink sha256, the default, checked each time) or discards it (-sink discard).
//
// It prints the best and median MiB/s (of plaintext) of both, their ratio, the child's RSS just
// after it started listening and its VmHWM after the loads, the same rates counted in CPU time
// (the loader process's, from /proc/<pid>/stat, and openssl's), and exits 1 when the largest
// size's VmHWM exceeds the smallest's by more than -max-rss-growth.
package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"hash"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/azaion/loader/bench/internal/bytesize"
	"github.com/azaion/loader/internal/refapi"
	"github.com/azaion/loader/internal/resources"
	"github.com/azaion/loader/internal/security"
)

const (
	benchEmail    = "bench@azaion.local"
	benchPassword = "bench-password"
	benchFolder   = "models"
	splitMax      = 3072 // SPEC §5
	splitRatio    = 0.3
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench/load:", err)
		os.Exit(1)
	}
}

// result is what one size measured.
type result struct {
	size                 int64
	loader, openssl      []time.Duration
	loaderCPU, sslCPU    []time.Duration // CPU time of the loader process and of openssl per run
	startRSS, startHWM   int64           // bytes, just after the child listened
	peakHWM, maxrssAfter int64           // bytes: VmHWM after the loads; getrusage maxrss after exit
}

func run() error {
	sizesFlag := flag.String("sizes", "16MiB,256MiB", "comma-separated resource sizes: bytes or a number with KiB, MiB or GiB")
	runs := flag.Int("runs", 3, "timed loads (and openssl runs) per size")
	maxGrowth := flag.String("max-rss-growth", "32MiB", "fail when the largest size's VmHWM exceeds the smallest's by more than this")
	sink := flag.String("sink", "sha256", "what the client does with each timed body: sha256 (checked against the plaintext) or discard")
	workDir := flag.String("dir", "", "directory for the binary, the ciphertexts and the cache (default: a new temp dir, removed at the end)")
	bin := flag.String("bin", "", "a prebuilt azaion-loader binary (default: go build ./cmd/azaion-loader)")
	flag.Parse()
	var sizes []int64
	for _, s := range strings.Split(*sizesFlag, ",") {
		n, err := bytesize.Parse(s)
		if err != nil {
			return fmt.Errorf("-sizes: %w", err)
		}
		sizes = append(sizes, n)
	}
	growthLimit, err := bytesize.Parse(*maxGrowth)
	if err != nil {
		return fmt.Errorf("-max-rss-growth: %w", err)
	}
	if *runs < 1 {
		return errors.New("-runs: want at least 1")
	}
	if *sink != "sha256" && *sink != "discard" {
		return fmt.Errorf("-sink: want sha256 or discard, got %q", *sink)
	}
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		return err
	}
	dir := *workDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "azaion-bench-load-*"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}

	fmt.Printf("machine: %s/%s, nproc %d, %s; load average %s; %s\n", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), cpuModel(), loadAvg(), runtime.Version())
	osslVersion, _ := exec.Command(openssl, "version").Output()
	fmt.Printf("openssl: %s; client sink: %s (SHA-256 alone here: %.0f MiB/s); work dir %s\n",
		strings.TrimSpace(string(osslVersion)), *sink, sha256Rate(), dir)

	if *bin == "" {
		*bin = filepath.Join(dir, "azaion-loader")
		t0 := time.Now()
		out, err := exec.Command("go", "build", "-o", *bin, "github.com/azaion/loader/cmd/azaion-loader").CombinedOutput()
		if err != nil {
			return fmt.Errorf("go build: %v\n%s", err, out)
		}
		fmt.Printf("setup: azaion-loader built in %v\n", time.Since(t0).Round(time.Millisecond))
	}

	// The reference Resource API, in this process. Its CDN is a port nobody listens on.
	ref, err := refapi.New(refapi.Config{
		Users:   []refapi.User{{ID: "1", Email: benchEmail, Password: benchPassword, Role: "Admin"}},
		DataDir: filepath.Join(dir, "refapi"),
		CDN: refapi.CDNSettings{
			Host:                "http://127.0.0.1:1",
			DownloaderAccessKey: "bench", DownloaderAccessSecret: "bench-secret",
			UploaderAccessKey: "bench", UploaderAccessSecret: "bench-secret",
		},
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	refSrv := &http.Server{Handler: ref, ReadHeaderTimeout: 10 * time.Second}
	go refSrv.Serve(ln)
	defer refSrv.Close()
	refURL := "http://" + ln.Addr().String()

	cacheDir := filepath.Join(dir, "cache")
	key := security.KeyFromString(security.ResourceKey())
	var results []result
	for i, size := range sizes {
		name := fmt.Sprintf("bench-%d.bin", i)
		t0 := time.Now()
		encPath, sum, err := prepare(ref, key, cacheDir, dir, name, size, uint64(i))
		if err != nil {
			return fmt.Errorf("prepare %s: %w", bytesize.Format(size), err)
		}
		fmt.Printf("setup: %s resource encrypted, split and placed in %v\n", bytesize.Format(size), time.Since(t0).Round(time.Millisecond))
		res, err := measure(*bin, openssl, refURL, cacheDir, dir, encPath, name, size, sum, key, *runs, *sink == "sha256")
		if err != nil {
			return fmt.Errorf("%s: %w", bytesize.Format(size), err)
		}
		results = append(results, res)
		os.Remove(encPath)
		os.RemoveAll(filepath.Join(cacheDir, benchFolder))
	}

	mib := func(size int64, d time.Duration) float64 { return float64(size) / (1 << 20) / d.Seconds() }
	fmt.Println()
	fmt.Printf("%-10s  %21s  %21s  %12s  %26s  %10s\n", "", "loader /load MiB/s", "openssl enc -d MiB/s", "ratio", "loader RSS at start", "loader")
	fmt.Printf("%-10s  %10s %10s  %10s %10s  %12s  %12s %12s  %10s\n", "size", "best", "median", "best", "median", "best/best", "VmRSS", "VmHWM", "VmHWM")
	for _, r := range results {
		lb, lm := bestMedian(r.loader)
		ob, om := bestMedian(r.openssl)
		fmt.Printf("%-10s  %10.1f %10.1f  %10.1f %10.1f  %12.2f  %12s %12s  %10s\n", bytesize.Format(r.size),
			mib(r.size, lb), mib(r.size, lm), mib(r.size, ob), mib(r.size, om), mib(r.size, lb)/mib(r.size, ob),
			bytesize.Format(r.startRSS), bytesize.Format(r.startHWM), bytesize.Format(r.peakHWM))
	}
	// CPU time per byte is steadier than wall time on a shared machine: cycles are what the
	// loader takes from the other programs of a device.
	fmt.Printf("\n%-10s  %21s  %21s  %12s\n", "", "loader CPU MiB/s", "openssl CPU MiB/s", "ratio")
	fmt.Printf("%-10s  %10s %10s  %10s %10s  %12s\n", "size", "best", "median", "best", "median", "median/median")
	for _, r := range results {
		lb, lm := bestMedian(r.loaderCPU)
		ob, om := bestMedian(r.sslCPU)
		fmt.Printf("%-10s  %10.1f %10.1f  %10.1f %10.1f  %12.2f\n", bytesize.Format(r.size),
			mib(r.size, lb), mib(r.size, lm), mib(r.size, ob), mib(r.size, om), mib(r.size, lm)/mib(r.size, om))
	}
	fmt.Printf("\nload average after the run: %s\n", loadAvg())
	if len(results) < 2 {
		return nil
	}
	small, large := results[0], results[0]
	for _, r := range results {
		if r.size < small.size {
			small = r
		}
		if r.size > large.size {
			large = r
		}
	}
	growth := large.peakHWM - small.peakHWM
	fmt.Printf("VmHWM growth %s → %s: %s (limit %s; getrusage maxrss %s → %s)\n", bytesize.Format(small.size), bytesize.Format(large.size),
		humanSigned(growth), bytesize.Format(growthLimit), bytesize.Format(small.maxrssAfter), bytesize.Format(large.maxrssAfter))
	if growth > growthLimit {
		return fmt.Errorf("the loader's peak RSS grows with the resource: %s more at %s than at %s (limit %s)",
			humanSigned(growth), bytesize.Format(large.size), bytesize.Format(small.size), bytesize.Format(growthLimit))
	}
	return nil
}

// prepare makes a resource of size pseudo-random bytes, writes IV ‖ AES-256-CBC of it to a file,
// puts its small part on the reference API and its big part into the loader's cache. It
// returns the ciphertext's path and the plaintext's SHA-256.
func prepare(ref *refapi.Server, key []byte, cacheDir, dir, name string, size int64, seed uint64) (string, [32]byte, error) {
	var sum [32]byte
	encPath := filepath.Join(dir, name+".enc")
	f, err := os.Create(encPath)
	if err != nil {
		return "", sum, err
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	enc, err := security.NewEncrypter(bw, key)
	if err != nil {
		return "", sum, err
	}
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(enc, h), mrand.NewChaCha8([32]byte{byte(seed), 'a', 'z', 'a', 'i', 'o', 'n'}), size); err != nil {
		return "", sum, err
	}
	if err := enc.Close(); err != nil {
		return "", sum, err
	}
	if err := bw.Flush(); err != nil {
		return "", sum, err
	}
	copy(sum[:], h.Sum(nil))
	clen, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return "", sum, err
	}
	if clen != security.EncryptedSize(size) {
		return "", sum, fmt.Errorf("ciphertext of %d bytes, want %d", clen, security.EncryptedSize(size))
	}
	n := min(int64(splitMax), int64(splitRatio*float64(clen)))
	small := make([]byte, n)
	if _, err := f.ReadAt(small, 0); err != nil {
		return "", sum, err
	}
	if err := ref.PutResource(benchFolder, name+".small", bytes.NewReader(small)); err != nil {
		return "", sum, err
	}
	cache, err := resources.New(nil, resources.Options{CacheDir: cacheDir})
	if err != nil {
		return "", sum, err
	}
	defer cache.Close()
	if err := cache.Preload(benchFolder, name, small, io.NewSectionReader(f, n, clen-n)); err != nil {
		return "", sum, err
	}
	return encPath, sum, f.Close()
}

// measure starts a fresh loader for one size and times its /load against openssl.
func measure(bin, openssl, refURL, cacheDir, dir, encPath, name string, size int64, sum [32]byte, key []byte, runs int, hashEach bool) (result, error) {
	res := result{size: size}
	cmd := exec.Command(bin, "serve")
	cmd.Env = append(os.Environ(), "RESOURCE_API_URL="+refURL, "MODEL_CACHE_DIR="+cacheDir,
		"LISTEN_ADDR=127.0.0.1:0", "LOG_DIR="+filepath.Join(dir, "logs"), "LOG_LEVEL=info")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return res, err
	}
	if err := cmd.Start(); err != nil {
		return res, err
	}
	pid := cmd.Process.Pid
	exited := false
	defer func() {
		if !exited {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	var logTail bytes.Buffer
	addrRE := regexp.MustCompile(`msg=listening addr=(\S+)`)
	sc := bufio.NewScanner(stderr)
	base := ""
	for sc.Scan() {
		logTail.WriteString(sc.Text() + "\n")
		if m := addrRE.FindStringSubmatch(sc.Text()); m != nil {
			base = "http://" + m[1]
			break
		}
	}
	if base == "" {
		return res, fmt.Errorf("the loader did not start:\n%s", logTail.String())
	}
	go io.Copy(io.Discard, stderr) // keep draining; the log file has it all
	res.startRSS, res.startHWM = procStatus(pid, "VmRSS"), procStatus(pid, "VmHWM")

	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	resp, err := client.Post(base+"/login", "application/json",
		strings.NewReader(fmt.Sprintf(`{"email":%q,"password":%q}`, benchEmail, benchPassword)))
	if err != nil {
		return res, fmt.Errorf("login: %w", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return res, fmt.Errorf("login: %d %s", resp.StatusCode, body)
	}

	loadOnce := func(check bool) (time.Duration, error) {
		var w io.Writer = io.Discard
		var h hash.Hash
		if check {
			h = sha256.New()
			w = h
		}
		t0 := time.Now()
		resp, err := client.Post(base+"/load/"+name, "application/json", strings.NewReader(`{"folder":"`+benchFolder+`"}`))
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			return 0, fmt.Errorf("load: %d %s", resp.StatusCode, b)
		}
		if resp.ContentLength != size {
			return 0, fmt.Errorf("load: Content-Length %d, want %d", resp.ContentLength, size)
		}
		n, err := io.Copy(w, resp.Body)
		d := time.Since(t0)
		if err != nil || n != size {
			return 0, fmt.Errorf("load: read %d of %d bytes: %v", n, size, err)
		}
		if check && [32]byte(h.Sum(nil)) != sum {
			return 0, errors.New("load: the body's SHA-256 differs from the plaintext's")
		}
		return d, nil
	}
	ivHex, err := readIV(encPath)
	if err != nil {
		return res, err
	}
	keyHex := hex.EncodeToString(key)
	// load times one /load and counts the loader process's CPU time for it.
	load := func(check bool) (time.Duration, time.Duration, error) {
		cpu0 := procCPU(pid)
		d, err := loadOnce(check)
		return d, procCPU(pid) - cpu0, err
	}
	decrypt := func() (time.Duration, time.Duration, error) {
		f, err := os.Open(encPath)
		if err != nil {
			return 0, 0, err
		}
		defer f.Close()
		if _, err := f.Seek(security.BlockSize, io.SeekStart); err != nil { // past the IV: openssl reads the fd from here
			return 0, 0, err
		}
		c := exec.Command(openssl, "enc", "-d", "-aes-256-cbc", "-K", keyHex, "-iv", ivHex, "-out", os.DevNull)
		c.Stdin = f
		var errBuf bytes.Buffer
		c.Stderr = &errBuf
		t0 := time.Now()
		if err := c.Run(); err != nil {
			return 0, 0, fmt.Errorf("openssl enc -d: %v %s", err, errBuf.String())
		}
		d := time.Since(t0)
		ru := c.ProcessState.SysUsage().(*syscall.Rusage)
		return d, time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
	}

	// Warm-up: checked, untimed; it also pulls the big part into the page cache.
	if _, _, err := load(true); err != nil {
		return res, fmt.Errorf("warm-up: %w", err)
	}
	if _, _, err := decrypt(); err != nil {
		return res, fmt.Errorf("warm-up: %w", err)
	}
	for range runs {
		d, cpu, err := load(hashEach)
		if err != nil {
			return res, err
		}
		res.loader, res.loaderCPU = append(res.loader, d), append(res.loaderCPU, cpu)
		if d, cpu, err = decrypt(); err != nil {
			return res, err
		}
		res.openssl, res.sslCPU = append(res.openssl, d), append(res.sslCPU, cpu)
	}
	res.peakHWM = procStatus(pid, "VmHWM")
	if res.peakHWM < 0 {
		return res, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
	}
	exited = true
	cmd.Process.Kill()
	cmd.Wait()
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		res.maxrssAfter = ru.Maxrss << 10 // KiB on Linux
	} else {
		res.maxrssAfter = -1
	}
	return res, nil
}

// procCPU is the CPU time (user and system) process pid has used so far, from
// /proc/<pid>/stat in clock ticks (100 per second on Linux); 0 if it cannot be read.
func procCPU(pid int) time.Duration {
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

// procStatus reads a "kB" field of /proc/<pid>/status, in bytes; -1 when it is not there.
func procStatus(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
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

func readIV(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	iv := make([]byte, security.BlockSize)
	if _, err := io.ReadFull(f, iv); err != nil {
		return "", err
	}
	return hex.EncodeToString(iv), nil
}

func bestMedian(ds []time.Duration) (best, median time.Duration) {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[0], s[len(s)/2]
}

// sha256Rate is how fast this machine hashes in Go, in MiB/s: the client's own ceiling.
func sha256Rate() float64 {
	buf := make([]byte, 1<<20)
	rand.Read(buf)
	h := sha256.New()
	t0 := time.Now()
	const n = 128
	for range n {
		h.Write(buf)
	}
	return n / time.Since(t0).Seconds()
}

func humanSigned(n int64) string {
	if n < 0 {
		return "-" + bytesize.Format(-n)
	}
	return "+" + bytesize.Format(n)
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
		}
	}
	return "unknown CPU"
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
