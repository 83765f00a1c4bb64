// Command decrypt benchmarks AES-256-CBC decryption (SPEC §13) next to openssl, in one run:
//
//	go run ./bench/decrypt [-size 1GiB] [-runs 3] [-seconds 1] [-dir DIR]
//
// It measures, alternating ours and the baseline -runs times and keeping the best of each:
//
//   - one core, in cache: the kernel (security.NewCBCDecrypter) decrypting a 16 KiB buffer over
//     and over with GOMAXPROCS=1, next to `openssl speed -evp aes-256-cbc -decrypt`'s figure for
//     16384-byte blocks, and next to the standard library's CBC (crypto/cipher) on the same
//     buffer. openssl speed counts CPU time, so ours is counted in CPU time too (getrusage);
//   - one core, a file: security.NewDecrypter reading a -size archive from the page cache and
//     discarding the plaintext with GOMAXPROCS=1, next to `openssl enc -d` of the same file to
//     /dev/null, in wall time and in CPU time (the child's rusage);
//   - all cores: the same with GOMAXPROCS at the number of CPUs.
//
// It prints one Markdown section (bench contract: figure, baseline, ratio, machine). It needs
// openssl on PATH and -size of disk in a temp dir under -dir (default: $AZAION_BENCH_DIR, which
// scripts/bench.sh sets, else the system's temp dir), removed at the end.
package main

import (
	"bufio"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/azaion/loader/bench/internal/bytesize"
	"github.com/azaion/loader/bench/internal/report"
	"github.com/azaion/loader/internal/security"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench/decrypt:", err)
		os.Exit(1)
	}
}

// rate is a measured throughput in bytes per second, by wall time and by CPU time.
type rate struct{ wall, cpu float64 }

// best keeps the larger of each figure.
func (r *rate) best(o rate) {
	r.wall, r.cpu = max(r.wall, o.wall), max(r.cpu, o.cpu)
}

func run() error {
	sizeFlag := flag.String("size", "1GiB", "size of the archive decrypted from a file")
	runs := flag.Int("runs", 3, "measurements of each figure (ours and the baseline alternate); the best counts")
	seconds := flag.Int("seconds", 1, "seconds per in-cache measurement (openssl speed -seconds)")
	workDir := flag.String("dir", os.Getenv("AZAION_BENCH_DIR"), "directory under which the archive goes (default: the system's temp dir)")
	flag.Parse()
	size, err := bytesize.Parse(*sizeFlag)
	if err != nil {
		return fmt.Errorf("-size: %w", err)
	}
	if *runs < 1 || *seconds < 1 {
		return errors.New("-runs and -seconds: want at least 1")
	}
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp(*workDir, "azaion-bench-decrypt-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	loadBefore := report.LoadAverage()
	osslVersion, _ := exec.Command(openssl, "version").Output()

	key := make([]byte, security.KeySize)
	iv := make([]byte, security.BlockSize)
	rand.Read(key)
	rand.Read(iv)

	// One core, in cache.
	const block = 16 << 10
	var kernel, stdlib rate
	var ossl rate
	for range *runs {
		r, err := inCache(time.Duration(*seconds)*time.Second, block, func() cipher.BlockMode {
			m, err := security.NewCBCDecrypter(key, iv)
			if err != nil {
				panic(err)
			}
			return m
		})
		if err != nil {
			return err
		}
		kernel.best(r)
		o, err := opensslSpeed(openssl, *seconds, block)
		if err != nil {
			return err
		}
		ossl.best(o)
		r, err = inCache(time.Duration(*seconds)*time.Second, block, func() cipher.BlockMode {
			b, _ := aes.NewCipher(key)
			return cipher.NewCBCDecrypter(b, iv)
		})
		if err != nil {
			return err
		}
		stdlib.best(r)
	}

	// A file.
	encPath := filepath.Join(dir, "archive.enc")
	t0 := time.Now()
	if err := writeArchive(encPath, key, size); err != nil {
		return err
	}
	setup := time.Since(t0)
	if _, err := readFile(encPath, key, 1); err != nil { // into the page cache, and checked
		return err
	}
	var one, all, osslFile rate
	for range *runs {
		r, err := readFile(encPath, key, 1)
		if err != nil {
			return err
		}
		one.best(r)
		o, err := opensslDec(openssl, encPath, key, size)
		if err != nil {
			return err
		}
		osslFile.best(o)
		r, err = readFile(encPath, key, runtime.NumCPU())
		if err != nil {
			return err
		}
		all.best(r)
	}

	gb := func(v float64) string { return fmt.Sprintf("%.2f GB/s", v/1e9) }
	sec := report.Section{Title: "CBC decryption, one core and all cores (bench/decrypt)", LoadBefore: loadBefore}
	row := func(what string, ours float64, base string, theirs float64) {
		sec.Rows = append(sec.Rows, report.Row{Figure: what, Ours: gb(ours), Baseline: base + ": " + gb(theirs), Ratio: report.Ratio(ours, theirs)})
	}
	row("one core, 16 KiB buffer in cache, CPU time", kernel.cpu, "`openssl speed -evp aes-256-cbc -decrypt`, 16384-byte blocks", ossl.cpu)
	row("one core, 16 KiB buffer in cache, CPU time", kernel.cpu, "Go standard library CBC (`crypto/cipher`), same buffer", stdlib.cpu)
	row("one core (GOMAXPROCS=1), file → discard, wall time", one.wall, "`openssl enc -d` of the same file → /dev/null", osslFile.wall)
	row("one core (GOMAXPROCS=1), file → discard, CPU time", one.cpu, "`openssl enc -d`, its CPU time", osslFile.cpu)
	row(fmt.Sprintf("all %d cores, file → discard, wall time", runtime.NumCPU()), all.wall, "`openssl enc -d` (one core)", osslFile.wall)
	row(fmt.Sprintf("all %d cores, file → discard, CPU time", runtime.NumCPU()), all.cpu, "`openssl enc -d`, its CPU time", osslFile.cpu)
	sec.Notes = []string{fmt.Sprintf("Kernel: %s. GB = 10^9 bytes (higher is better); best of %d alternating runs; %s archive from the page cache, written in %v. %s.",
		security.Kernel(), *runs, bytesize.Format(size), setup.Round(time.Millisecond), strings.TrimSpace(string(osslVersion)))}
	return sec.Write(os.Stdout)
}

// inCache decrypts a block-byte buffer in place over and over for d with one goroutine on a
// locked thread and GOMAXPROCS=1, as openssl speed does with its buffer.
func inCache(d time.Duration, block int, mode func() cipher.BlockMode) (rate, error) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	buf := make([]byte, block)
	rand.Read(buf)
	m := mode()
	var n int64
	c0, t0 := cpuTime(), time.Now()
	for time.Since(t0) < d {
		for range 64 {
			m.CryptBlocks(buf, buf)
		}
		n += 64 * int64(block)
	}
	wall, cpu := time.Since(t0), cpuTime()-c0
	return rate{float64(n) / wall.Seconds(), float64(n) / cpu.Seconds()}, nil
}

// opensslSpeed runs `openssl speed -evp aes-256-cbc -decrypt` and returns its figure for
// block-byte blocks, which openssl computes from CPU time (and in wall time with -elapsed).
func opensslSpeed(openssl string, seconds, block int) (rate, error) {
	var r rate
	for _, elapsed := range []bool{false, true} {
		args := []string{"speed", "-seconds", strconv.Itoa(seconds), "-evp", "aes-256-cbc", "-decrypt"}
		if elapsed {
			args = append(args, "-elapsed")
		}
		out, err := exec.Command(openssl, args...).Output()
		if err != nil {
			return r, fmt.Errorf("openssl speed: %w", err)
		}
		v, err := parseSpeed(string(out), block)
		if err != nil {
			return r, err
		}
		if elapsed {
			r.wall = v
		} else {
			r.cpu = v
		}
	}
	return r, nil
}

// parseSpeed reads openssl speed's table: a header "type 16 bytes 64 bytes ... 16384 bytes"
// and a row "AES-256-CBC 123.45k ..." in thousands of bytes per second. It returns the figure
// of the column closest to block bytes.
func parseSpeed(out string, block int) (float64, error) {
	var sizes []int
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 2 && f[0] == "type" {
			sizes = sizes[:0]
			for i := 1; i+1 < len(f); i += 2 {
				n, err := strconv.Atoi(f[i])
				if err != nil || f[i+1] != "bytes" {
					return 0, fmt.Errorf("openssl speed: header %q", sc.Text())
				}
				sizes = append(sizes, n)
			}
			continue
		}
		if len(f) == len(sizes)+1 && strings.EqualFold(f[0], "AES-256-CBC") {
			bestCol := 0
			for i, s := range sizes {
				if abs(s-block) < abs(sizes[bestCol]-block) {
					bestCol = i
				}
			}
			v, err := strconv.ParseFloat(strings.TrimSuffix(f[1+bestCol], "k"), 64)
			if err != nil {
				return 0, fmt.Errorf("openssl speed: row %q", sc.Text())
			}
			return v * 1000, nil
		}
	}
	return 0, fmt.Errorf("openssl speed: no AES-256-CBC row in:\n%s", out)
}

// writeArchive writes IV ‖ AES-256-CBC(PKCS#7(size pseudo-random bytes)) to path.
func writeArchive(path string, key []byte, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	enc, err := security.NewEncrypter(bw, key)
	if err == nil {
		var seed [32]byte
		rand.Read(seed[:])
		_, err = io.CopyN(enc, mrand.NewChaCha8(seed), size)
	}
	if err == nil {
		err = enc.Close()
	}
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// readFile decrypts the archive at path with NewDecrypter on procs cores, discarding the
// plaintext through a 32 KiB buffer (as io.Copy into a socket would), and returns the rate
// in plaintext bytes.
func readFile(path string, key []byte, procs int) (rate, error) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
	f, err := os.Open(path)
	if err != nil {
		return rate{}, err
	}
	defer f.Close()
	buf := make([]byte, 32<<10)
	dec := security.NewDecrypter(f, key)
	var n int64
	c0, t0 := cpuTime(), time.Now()
	for {
		m, err := dec.Read(buf)
		n += int64(m)
		if err == io.EOF {
			break
		}
		if err != nil {
			return rate{}, err
		}
	}
	wall, cpu := time.Since(t0), cpuTime()-c0
	return rate{float64(n) / wall.Seconds(), float64(n) / cpu.Seconds()}, nil
}

// opensslDec runs `openssl enc -d` over the archive at path (the IV given on the command line,
// the body read from stdin) to /dev/null, and returns its rate in plaintext bytes.
func opensslDec(openssl, path string, key []byte, size int64) (rate, error) {
	f, err := os.Open(path)
	if err != nil {
		return rate{}, err
	}
	defer f.Close()
	iv := make([]byte, security.BlockSize)
	if _, err := io.ReadFull(f, iv); err != nil {
		return rate{}, err
	}
	cmd := exec.Command(openssl, "enc", "-d", "-aes-256-cbc", "-K", hex.EncodeToString(key), "-iv", hex.EncodeToString(iv), "-out", os.DevNull)
	cmd.Stdin = f // past the IV
	t0 := time.Now()
	out, err := cmd.CombinedOutput()
	wall := time.Since(t0)
	if err != nil {
		return rate{}, fmt.Errorf("openssl enc -d: %v\n%s", err, out)
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return rate{float64(size) / wall.Seconds(), float64(size) / cpu.Seconds()}, nil
}

// cpuTime is the CPU time this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func abs(n int) int { return max(n, -n) }
