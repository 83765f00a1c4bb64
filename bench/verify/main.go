// Command verify measures what the model cache's integrity check costs (SPEC §11, bit rot):
//
//	go run ./bench/verify [-size 256MiB] [-runs 3]
//
// (a) the SHA-256 verification of a cached big part (internal/cache, Cache.Verify) next to
// `sha256sum` and `openssl dgst -sha256` of the same file, page cache warm, best of -runs;
// (b) what verification adds to the first /load of a cached part after a restart: the loader
// runs as a process (built here) in front of the reference Resource API (in this process); the
// part is in its cache, the CDN is a closed port. For each run a fresh process serves the part
// twice: the first /load verifies it, the second finds it verified. The difference is the
// verification's share of the first /load.
//
// It prints one Markdown section: the figures, their baselines from the same run, the ratios
// and the machine.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/azaion/loader/bench/internal/bytesize"
	"github.com/azaion/loader/bench/internal/loaderenv"
	"github.com/azaion/loader/bench/internal/report"
	"github.com/azaion/loader/internal/cache"
)

const folder = loaderenv.Folder

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench/verify:", err)
		os.Exit(1)
	}
}

func run() error {
	sizeFlag := flag.String("size", "256MiB", "size of the resource")
	runs := flag.Int("runs", 3, "runs of each measurement; the best counts")
	flag.Parse()
	loadBefore := report.LoadAverage()
	size, err := bytesize.Parse(*sizeFlag)
	if err != nil {
		return fmt.Errorf("-size: %w", err)
	}
	dir, err := os.MkdirTemp("", "azaion-bench-verify-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	// The resource placed as a device holds it: the small part on the reference API, the big
	// part paired in the cache the loader process will use.
	ref, err := loaderenv.StartRefAPI(filepath.Join(dir, "refapi"), loaderenv.NoCDN)
	if err != nil {
		return err
	}
	defer ref.Close()
	refURL := ref.URL
	cacheDir := filepath.Join(dir, "cache")
	res, err := ref.Prepare(cacheDir, dir, "bench.bin", size, 'v')
	if err != nil {
		return err
	}
	os.Remove(res.EncPath) // only bench/load's openssl runs need the whole ciphertext
	want := res.Sum[:]
	bigPath := filepath.Join(cacheDir, folder, "bench.bin.big")
	fi, err := os.Stat(bigPath)
	if err != nil {
		return err
	}
	big := fi.Size()
	if err := warm(bigPath); err != nil {
		return err
	}

	// (a) Verification next to the standard tools.
	ours, err := best(*runs, func() error {
		c := cache.New(cache.Options{Dir: cacheDir}) // a new process: nothing verified yet
		p, err := c.Open(folder, "bench.bin")
		if err != nil {
			return err
		}
		defer p.Close()
		return c.Verify(p)
	})
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	sum, err := best(*runs, func() error { return exec.Command("sha256sum", bigPath).Run() })
	if err != nil {
		return fmt.Errorf("sha256sum: %w", err)
	}
	dgst, err := best(*runs, func() error { return exec.Command("openssl", "dgst", "-sha256", bigPath).Run() })
	if err != nil {
		return fmt.Errorf("openssl dgst: %w", err)
	}

	// (b) The first /load after a restart (verifies) next to the second (verified).
	bin, err := loaderenv.Binary(dir)
	if err != nil {
		return err
	}
	var firsts, seconds []time.Duration
	for range *runs {
		first, second, err := twoLoads(bin, refURL, cacheDir, want)
		if err != nil {
			return err
		}
		firsts, seconds = append(firsts, first), append(seconds, second)
	}
	first, second := slices.Min(firsts), slices.Min(seconds)

	mibps := func(d time.Duration) float64 { return float64(big) / (1 << 20) / d.Seconds() }
	sec := report.Section{
		Title: fmt.Sprintf("Cache verification: SHA-256 of a cached big part (%s)", bytesize.Format(big)),
		Rows: []report.Row{
			{Figure: "verify throughput, page cache warm", Ours: fmt.Sprintf("%.0f MiB/s (`Cache.Verify`)", mibps(ours)),
				Baseline: fmt.Sprintf("%.0f MiB/s (`sha256sum`)", mibps(sum)), Ratio: report.Ratio(mibps(ours), mibps(sum))},
			{Figure: "verify throughput, page cache warm", Ours: fmt.Sprintf("%.0f MiB/s (`Cache.Verify`)", mibps(ours)),
				Baseline: fmt.Sprintf("%.0f MiB/s (`openssl dgst -sha256`)", mibps(dgst)), Ratio: report.Ratio(mibps(ours), mibps(dgst))},
			{Figure: "first /load of the cached part after a restart (verifies it)", Ours: fmt.Sprintf("%.3f s", first.Seconds()),
				Baseline: fmt.Sprintf("%.3f s (second /load: verified)", second.Seconds()),
				Ratio:    fmt.Sprintf("%s (+%.3f s)", report.Ratio(first.Seconds(), second.Seconds()), (first - second).Seconds())},
		},
		Notes:      []string{fmt.Sprintf("Best of %d runs; the loader is the built binary as a process, the client hashes each body and checks it.", *runs)},
		LoadBefore: loadBefore,
	}
	return sec.Write(os.Stdout)
}

// warm reads the file once, so every measurement finds it in the page cache.
func warm(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(io.Discard, f)
	return err
}

// best runs fn n times and returns the shortest time.
func best(n int, fn func() error) (time.Duration, error) {
	var out time.Duration
	for i := range n {
		t0 := time.Now()
		if err := fn(); err != nil {
			return 0, err
		}
		if d := time.Since(t0); i == 0 || d < out {
			out = d
		}
	}
	return out, nil
}

// twoLoads starts a loader, logs in and times two /loads of the part, checking each body.
func twoLoads(bin, refURL, cacheDir string, want []byte) (first, second time.Duration, err error) {
	l, err := loaderenv.StartLoader(bin, []string{"--log-dir", ""}, "RESOURCE_API_URL="+refURL, "MODEL_CACHE_DIR="+cacheDir)
	if err != nil {
		return 0, 0, err
	}
	defer l.Kill()
	if err := l.Login(); err != nil {
		return 0, 0, err
	}
	load := func() (time.Duration, error) {
		h := sha256.New()
		t0 := time.Now()
		code, body, err := l.Post(context.Background(), "/load/bench.bin", `{"folder":"`+folder+`"}`, h)
		d := time.Since(t0)
		switch {
		case err != nil:
			return 0, err
		case code != 200:
			return 0, fmt.Errorf("/load: %d %s", code, body)
		case !bytes.Equal(h.Sum(nil), want):
			return 0, fmt.Errorf("/load answered other bytes than were uploaded")
		}
		return d, nil
	}
	if first, err = load(); err != nil {
		return 0, 0, err
	}
	second, err = load()
	return first, second, err
}
