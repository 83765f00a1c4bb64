// Command load benchmarks POST /load (SPEC §2, §5) with the big part already cached, through
// real HTTP on loopback, against `openssl enc -d` over the same ciphertext, in one run:
//
//	go run ./bench/load [-sizes 16MiB,256MiB] [-runs 3] [-max-rss-growth 32MiB]
//
// It prints one Markdown section on stdout (DEVELOPERS.md, "Benchmarks"), progress on stderr.
//
// For each size it makes a pseudo-random resource, encrypts it with the resource key (IV ‖
// AES-256-CBC, SPEC §4), splits it at n = min(3072, floor(0.3·len(c))) (SPEC §5), puts the
// small part on the reference API (in this process) and preloads the big part into the
// loader's MODEL_CACHE_DIR, as an offline-seeded device would have it (bench/internal/loaderenv).
//
// Each size gets a fresh `azaion-loader serve` child process, so its peak RSS (VmHWM in
// /proc/<pid>/status) belongs to that size alone. The child logs in, serves one untimed
// warm-up /load (whose body must hash to the plaintext's SHA-256; it also puts the big part in
// the page cache, where openssl finds it too), then -runs timed loads alternating with -runs
// timed `openssl enc -d -aes-256-cbc -K … -iv …` runs over the same ciphertext file (stdin is
// the file opened past its 16-byte IV) to /dev/null. The client discards every timed body, as
// openssl writes to /dev/null (-sink discard, the default: the warm-up already checked the
// bytes), or reads it into a SHA-256 checked each time (-sink sha256; on two cores the hashing
// client then competes with the loader for the CPU and measures itself as much as the loader).
//
// Beside wall-clock rates it gives the same rates counted in CPU time (the loader process's, from
// /proc/<pid>/stat, and openssl's), steadier on a shared machine. It exits 1 when the largest
// size's VmHWM exceeds the smallest's by more than -max-rss-growth.
package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/azaion/loader/bench/internal/bytesize"
	"github.com/azaion/loader/bench/internal/loaderenv"
	"github.com/azaion/loader/bench/internal/report"
	"github.com/azaion/loader/internal/security"
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
	startRSS             int64           // bytes, just after the child listened
	peakHWM, maxrssAfter int64           // bytes: VmHWM after the loads; getrusage maxrss after exit
}

func run() error {
	sizesFlag := flag.String("sizes", "16MiB,256MiB", "comma-separated resource sizes: bytes or a number with KiB, MiB or GiB")
	runs := flag.Int("runs", 3, "timed loads (and openssl runs) per size")
	maxGrowth := flag.String("max-rss-growth", "32MiB", "fail when the largest size's VmHWM exceeds the smallest's by more than this")
	sink := flag.String("sink", "discard", "what the client does with each timed body: discard (like openssl's -out /dev/null; the untimed warm-up is checked) or sha256 (checked against the plaintext each time)")
	workDir := flag.String("dir", os.Getenv("AZAION_BENCH_DIR"), "directory for the binary, the ciphertexts and the cache (default: a new temp dir, removed at the end)")
	flag.Parse()
	loadBefore := report.LoadAverage()
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
	dir, err := os.MkdirTemp(*workDir, "azaion-bench-load-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	osslVersion, _ := exec.Command(openssl, "version").Output()
	bin, err := loaderenv.Binary(dir)
	if err != nil {
		return err
	}
	ref, err := loaderenv.StartRefAPI(filepath.Join(dir, "refapi"), loaderenv.NoCDN)
	if err != nil {
		return err
	}
	defer ref.Close()

	cacheDir := filepath.Join(dir, "cache")
	var results []result
	for i, size := range sizes {
		t0 := time.Now()
		res, err := ref.Prepare(cacheDir, dir, fmt.Sprintf("bench-%d.bin", i), size, uint64(i))
		if err != nil {
			return fmt.Errorf("prepare %s: %w", bytesize.Format(size), err)
		}
		report.Progress("bench/load: %s resource encrypted, split and placed in %v", bytesize.Format(size), time.Since(t0).Round(time.Millisecond))
		r, err := measure(bin, openssl, ref.URL, cacheDir, dir, res, *runs, *sink == "sha256")
		if err != nil {
			return fmt.Errorf("%s: %w", bytesize.Format(size), err)
		}
		results = append(results, r)
		os.Remove(res.EncPath)
		os.RemoveAll(filepath.Join(cacheDir, loaderenv.Folder))
	}

	mib := func(size int64, d time.Duration) float64 { return float64(size) / (1 << 20) / d.Seconds() }
	sec := report.Section{Title: "/load throughput, big part cached (bench/load)", LoadBefore: loadBefore}
	for _, r := range results {
		lb, lm := bestMedian(r.loader)
		ob, om := bestMedian(r.openssl)
		size := bytesize.Format(r.size)
		sec.Rows = append(sec.Rows,
			report.Row{Figure: fmt.Sprintf("/load %s, MiB/s, best of %d (higher is better)", size, *runs), Ours: fmt.Sprintf("%.0f", mib(r.size, lb)),
				Baseline: fmt.Sprintf("openssl enc -d: %.0f", mib(r.size, ob)), Ratio: report.Ratio(mib(r.size, lb), mib(r.size, ob))},
			report.Row{Figure: fmt.Sprintf("/load %s, MiB/s, median", size), Ours: fmt.Sprintf("%.0f", mib(r.size, lm)),
				Baseline: fmt.Sprintf("openssl enc -d: %.0f", mib(r.size, om)), Ratio: report.Ratio(mib(r.size, lm), mib(r.size, om))},
		)
		// CPU time per byte is steadier than wall time on a shared machine: cycles are what the
		// loader takes from the other programs of a device.
		_, lcm := bestMedian(r.loaderCPU)
		_, ocm := bestMedian(r.sslCPU)
		sec.Rows = append(sec.Rows, report.Row{Figure: fmt.Sprintf("/load %s, MiB per CPU second, median (the loader process's CPU time)", size),
			Ours: fmt.Sprintf("%.0f", mib(r.size, lcm)), Baseline: fmt.Sprintf("openssl enc -d: %.0f", mib(r.size, ocm)),
			Ratio: report.Ratio(mib(r.size, lcm), mib(r.size, ocm))})
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
	for _, r := range results {
		row := report.Row{Figure: fmt.Sprintf("loader peak RSS (VmHWM) serving %s", bytesize.Format(r.size)), Ours: bytesize.Format(r.peakHWM)}
		if r.size != small.size {
			row.Baseline = fmt.Sprintf("serving %s: %s", bytesize.Format(small.size), bytesize.Format(small.peakHWM))
			row.Ratio = report.Ratio(float64(r.peakHWM), float64(small.peakHWM))
		}
		sec.Rows = append(sec.Rows, row)
	}
	growth := large.peakHWM - small.peakHWM
	sinkText := "discards every timed body, as openssl writes to /dev/null (the untimed warm-up load's body was checked against the plaintext's SHA-256)"
	if *sink == "sha256" {
		sinkText = fmt.Sprintf("reads every timed body into SHA-256 and checks it (SHA-256 alone runs at %.0f MiB/s here)", sha256Rate())
	}
	sec.Notes = append(sec.Notes, fmt.Sprintf("Each size in a fresh loader process (RSS %s just after it listened); the client "+
		"%s. Peak RSS grows by %s from %s to %s (limit %s; "+
		"getrusage maxrss %s → %s). %s.", bytesize.Format(small.startRSS), sinkText, signed(growth),
		bytesize.Format(small.size), bytesize.Format(large.size), bytesize.Format(growthLimit),
		bytesize.Format(small.maxrssAfter), bytesize.Format(large.maxrssAfter), strings.TrimSpace(string(osslVersion))))
	if err := sec.Write(os.Stdout); err != nil {
		return err
	}
	if growth > growthLimit {
		return fmt.Errorf("the loader's peak RSS grows with the resource: %s more at %s than at %s (limit %s)",
			signed(growth), bytesize.Format(large.size), bytesize.Format(small.size), bytesize.Format(growthLimit))
	}
	return nil
}

// measure starts a fresh loader for one resource and times its /load against openssl.
func measure(bin, openssl, refURL, cacheDir, dir string, res loaderenv.Resource, runs int, hashEach bool) (result, error) {
	r := result{size: res.Size}
	l, err := loaderenv.StartLoader(bin, nil, "RESOURCE_API_URL="+refURL, "MODEL_CACHE_DIR="+cacheDir, "LOG_DIR="+filepath.Join(dir, "logs"))
	if err != nil {
		return r, err
	}
	stopped := false
	defer func() {
		if !stopped {
			l.Kill()
		}
	}()
	pid := l.Cmd.Process.Pid
	r.startRSS = loaderenv.ProcStatus(pid, "VmRSS")
	if err := l.Login(); err != nil {
		return r, err
	}
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	loadOnce := func(check bool) (time.Duration, error) {
		var w io.Writer = io.Discard
		var h hash.Hash
		if check {
			h = sha256.New()
			w = h
		}
		t0 := time.Now()
		resp, err := client.Post(l.URL+"/load/"+res.Name, "application/json", strings.NewReader(`{"folder":"`+loaderenv.Folder+`"}`))
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			return 0, fmt.Errorf("load: %d %s", resp.StatusCode, b)
		}
		if resp.ContentLength != res.Size {
			return 0, fmt.Errorf("load: Content-Length %d, want %d", resp.ContentLength, res.Size)
		}
		n, err := io.Copy(w, resp.Body)
		d := time.Since(t0)
		if err != nil || n != res.Size {
			return 0, fmt.Errorf("load: read %d of %d bytes: %v", n, res.Size, err)
		}
		if check && [32]byte(h.Sum(nil)) != res.Sum {
			return 0, errors.New("load: the body's SHA-256 differs from the plaintext's")
		}
		return d, nil
	}
	ivHex, err := readIV(res.EncPath)
	if err != nil {
		return r, err
	}
	keyHex := hex.EncodeToString(security.KeyFromString(security.ResourceKey()))
	// load times one /load and counts the loader process's CPU time for it.
	load := func(check bool) (time.Duration, time.Duration, error) {
		cpu0 := loaderenv.ProcCPU(pid)
		d, err := loadOnce(check)
		return d, loaderenv.ProcCPU(pid) - cpu0, err
	}
	decrypt := func() (time.Duration, time.Duration, error) {
		f, err := os.Open(res.EncPath)
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
		return r, fmt.Errorf("warm-up: %w", err)
	}
	if _, _, err := decrypt(); err != nil {
		return r, fmt.Errorf("warm-up: %w", err)
	}
	for range runs {
		d, cpu, err := load(hashEach)
		if err != nil {
			return r, err
		}
		r.loader, r.loaderCPU = append(r.loader, d), append(r.loaderCPU, cpu)
		if d, cpu, err = decrypt(); err != nil {
			return r, err
		}
		r.openssl, r.sslCPU = append(r.openssl, d), append(r.sslCPU, cpu)
	}
	r.peakHWM = loaderenv.ProcStatus(pid, "VmHWM")
	if r.peakHWM < 0 {
		return r, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
	}
	stopped = true
	l.Kill()
	if ru, ok := l.Cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.maxrssAfter = ru.Maxrss << 10 // KiB on Linux
	} else {
		r.maxrssAfter = -1
	}
	return r, nil
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

func signed(n int64) string {
	if n < 0 {
		return "-" + bytesize.Format(-n)
	}
	return "+" + bytesize.Format(n)
}
