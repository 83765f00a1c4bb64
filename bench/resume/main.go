// Command resume measures what resuming a download across a restart saves (SPEC §11): the
// loader (built here, run as a process) is killed with SIGKILL when half of a big part is on
// disk, started again, and the part loaded; the CDN bytes sent after the restart are counted
// at a reverse proxy in front of MinIO.
//
//	go run ./bench/resume [-size 64MiB] [-runs 2]
//
// Ours: the partial download stays and the restarted loader continues it. Baseline, in the
// same run: the same kill, then the partial removed before the restart, which is what the
// loader did before (temp files swept at start) and what a client without resume does: a
// restart from zero. It needs MinIO: the one of scripts/test.sh (AZAION_TEST_MINIO_ENDPOINT,
// _ACCESS_KEY, _SECRET_KEY), else it starts ${XDG_CACHE_HOME:-~/.cache}/azaion-tools/minio
// (or minio from PATH) on a free port for the run.
//
// It prints one Markdown section: the figures, their baselines from the same run, the ratios
// and the machine.
package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/azaion/loader/bench/internal/bytesize"
	"github.com/azaion/loader/bench/internal/loaderenv"
	"github.com/azaion/loader/bench/internal/report"
	"github.com/azaion/loader/internal/hardware"
	"github.com/azaion/loader/internal/refapi"
	"github.com/azaion/loader/internal/resourceapi"
	"github.com/azaion/loader/internal/resources"
	"github.com/azaion/loader/internal/streams"
)

const (
	folder = "bench-resume"
	name   = "bench.bin"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench/resume:", err)
		os.Exit(1)
	}
}

func run() error {
	sizeFlag := flag.String("size", "64MiB", "size of the resource")
	runs := flag.Int("runs", 2, "kills and restarts of each kind; the figures are the means")
	flag.Parse()
	loadBefore := report.LoadAverage()
	size, err := bytesize.Parse(*sizeFlag)
	if err != nil {
		return fmt.Errorf("-size: %w", err)
	}
	dir, err := os.MkdirTemp("", "azaion-bench-resume-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	endpoint, access, secret, stopMinIO, err := minio(dir)
	if err != nil {
		return err
	}
	defer stopMinIO()
	proxy, err := newProxy(endpoint)
	if err != nil {
		return err
	}
	defer proxy.close()
	ref, err := loaderenv.StartRefAPI(filepath.Join(dir, "refapi"), refapi.CDNSettings{Host: proxy.url,
		DownloaderAccessKey: access, DownloaderAccessSecret: secret, UploaderAccessKey: access, UploaderAccessSecret: secret})
	if err != nil {
		return err
	}
	defer ref.Close()
	refURL := ref.URL
	want, err := upload(refURL, filepath.Join(dir, "uploader"), size)
	if err != nil {
		return err
	}
	bin, err := loaderenv.Binary(dir)
	if err != nil {
		return err
	}

	var ours, zero result
	for i := range *runs {
		for _, resume := range []bool{true, false} {
			r, err := restartAtHalf(bin, refURL, filepath.Join(dir, fmt.Sprintf("cache-%d-%v", i, resume)), proxy, size, want, resume)
			if err != nil {
				return err
			}
			if resume {
				ours.add(r)
			} else {
				zero.add(r)
			}
		}
	}
	ours.mean(*runs)
	zero.mean(*runs)
	pct := func(n float64) float64 { return 100 * n / float64(ours.part) }
	sec := report.Section{
		Title: fmt.Sprintf("Resume across a restart: a %s big part, the loader killed (SIGKILL) at about 50 %%", bytesize.Format(ours.part)),
		Rows: []report.Row{
			{Figure: "on disk at the kill", Ours: fmt.Sprintf("%.1f %%", pct(ours.atKill)), Baseline: fmt.Sprintf("%.1f %%", pct(zero.atKill))},
			{Figure: "CDN bytes after the restart (lower is better)", Ours: fmt.Sprintf("%s (%.1f %% of the part)", bytesize.Format(int64(ours.after)), pct(ours.after)),
				Baseline: fmt.Sprintf("%s (%.1f %%)", bytesize.Format(int64(zero.after)), pct(zero.after)), Ratio: report.Ratio(ours.after, zero.after)},
			{Figure: "first /load after the restart (lower is better)", Ours: fmt.Sprintf("%.2f s", ours.took),
				Baseline: fmt.Sprintf("%.2f s", zero.took), Ratio: report.Ratio(ours.took, zero.took)},
		},
		Notes: []string{fmt.Sprintf("Ours: the partial download resumed; baseline: the same kill, the partial removed, a restart from zero. "+
			"Means of %d runs each; bytes counted at a reverse proxy in front of MinIO on loopback (no rate limit after the restart).", *runs)},
		LoadBefore: loadBefore,
	}
	return sec.Write(os.Stdout)
}

// noLogFiles: the loaders of the bench write no log files.
var noLogFiles = []string{"--log-dir", ""}

type result struct {
	part                int64
	atKill, after, took float64
}

func (r *result) add(o result) {
	r.part = o.part
	r.atKill += o.atKill
	r.after += o.after
	r.took += o.took
}

func (r *result) mean(n int) {
	r.atKill /= float64(n)
	r.after /= float64(n)
	r.took /= float64(n)
}

// restartAtHalf loads the part through a loader that is killed when half of it is on disk,
// then (keeping its partial, or not) through a new one, and reports what the second took.
func restartAtHalf(bin, refURL, cacheDir string, proxy *proxy, size int64, want []byte, resume bool) (result, error) {
	env := []string{"RESOURCE_API_URL=" + refURL, "MODEL_CACHE_DIR=" + cacheDir}
	// Throttled so that the moment is easy to catch: the part in about 4 s.
	l, err := loaderenv.StartLoader(bin, noLogFiles, append(env, "CDN_RATE_LIMIT="+strconv.FormatInt(max(size/4, 64<<10), 10))...)
	if err != nil {
		return result{}, err
	}
	if err := l.Login(); err != nil {
		l.Kill()
		return result{}, err
	}
	go l.Post(context.Background(), "/load/"+name, `{"folder":"`+folder+`"}`, io.Discard) // ends with the kill
	partial := filepath.Join(cacheDir, folder, "."+name+".big.partial")
	part := bigSize(size)
	deadline := time.Now().Add(5 * time.Minute)
	for fileSize(partial) < part/2 {
		if time.Now().After(deadline) {
			l.Kill()
			return result{}, errors.New("the download did not get to half of the part")
		}
		time.Sleep(20 * time.Millisecond)
	}
	l.Kill()
	r := result{part: part, atKill: float64(fileSize(partial))}
	if !resume {
		os.Remove(partial)
		os.Remove(partial + ".meta")
	}

	proxy.got.Store(0)
	l, err = loaderenv.StartLoader(bin, noLogFiles, env...)
	if err != nil {
		return result{}, err
	}
	defer l.Kill()
	if err := l.Login(); err != nil {
		return result{}, err
	}
	h := sha256.New()
	t0 := time.Now()
	code, body, err := l.Post(context.Background(), "/load/"+name, `{"folder":"`+folder+`"}`, h)
	r.took = time.Since(t0).Seconds()
	switch {
	case err != nil:
		return result{}, err
	case code != http.StatusOK:
		return result{}, fmt.Errorf("/load after the restart: %d %s", code, body)
	case string(h.Sum(nil)) != string(want):
		return result{}, errors.New("/load after the restart answered other bytes than were uploaded")
	}
	r.after = float64(proxy.got.Load())
	return r, nil
}

// bigSize is the big part of a resource of size bytes: the ciphertext (IV, CBC with PKCS#7)
// less the 3072-byte small part (SPEC §4, §5).
func bigSize(size int64) int64 { return 16 + (size/16+1)*16 - min(3072, (16+(size/16+1)*16)*3/10) }

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return -1
	}
	return fi.Size()
}

// upload puts a pseudo-random resource of size bytes on the reference API and the CDN through
// the loader's own upload path, and returns its plaintext's SHA-256.
func upload(refURL, cacheDir string, size int64) ([]byte, error) {
	api, err := resourceapi.New(refURL, hardware.Fingerprint("/"), resourceapi.Options{})
	if err != nil {
		return nil, err
	}
	if err := api.Login(context.Background(), loaderenv.Email, loaderenv.Password); err != nil {
		return nil, err
	}
	s, err := resources.New(api, resources.Options{CacheDir: cacheDir})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	h := sha256.New()
	src := io.TeeReader(io.LimitReader(rand.NewChaCha8([32]byte{'r'}), size), h)
	if err := s.Upload(context.Background(), folder, name, src); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

// proxy is a reverse proxy in front of MinIO that counts the GET body bytes it passes on.
type proxy struct {
	url string
	srv *http.Server
	got atomic.Int64
}

func newProxy(endpoint string) (*proxy, error) {
	target, err := url.Parse("http://" + endpoint)
	if err != nil {
		return nil, err
	}
	p := &proxy{}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = r.In.Host // the Host the loader signed
		},
		ModifyResponse: func(resp *http.Response) error {
			if resp.Request.Method == http.MethodGet {
				resp.Body = streams.ReadCloser(streams.Count(resp.Body, &p.got), resp.Body)
			}
			return nil
		},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p.url = "http://" + ln.Addr().String()
	p.srv = &http.Server{Handler: rp, ReadHeaderTimeout: 10 * time.Second}
	go p.srv.Serve(ln)
	return p, nil
}

func (p *proxy) close() { p.srv.Close() }

// minio returns the MinIO of scripts/test.sh, or starts one in dir.
func minio(dir string) (endpoint, access, secret string, stop func(), err error) {
	if e := os.Getenv("AZAION_TEST_MINIO_ENDPOINT"); e != "" {
		return e, os.Getenv("AZAION_TEST_MINIO_ACCESS_KEY"), os.Getenv("AZAION_TEST_MINIO_SECRET_KEY"), func() {}, nil
	}
	bin, err := exec.LookPath("minio")
	if err != nil {
		cacheHome := os.Getenv("XDG_CACHE_HOME")
		if cacheHome == "" {
			home, _ := os.UserHomeDir()
			cacheHome = filepath.Join(home, ".cache")
		}
		bin = filepath.Join(cacheHome, "azaion-tools", "minio")
		if _, err := os.Stat(bin); err != nil {
			return "", "", "", nil, errors.New("no MinIO: run under scripts/test.sh, or build it as scripts/test.sh does")
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", "", "", nil, err
	}
	endpoint = ln.Addr().String()
	ln.Close()
	access, secret = "bench-resume", "bench-resume-secret"
	cmd := exec.Command(bin, "server", filepath.Join(dir, "minio"), "--address", endpoint, "--quiet")
	cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+access, "MINIO_ROOT_PASSWORD="+secret, "MINIO_BROWSER=off", "MINIO_UPDATE=off")
	if err := cmd.Start(); err != nil {
		return "", "", "", nil, err
	}
	stop = func() { cmd.Process.Kill(); cmd.Wait() }
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		resp, err := http.Get("http://" + endpoint + "/minio/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return endpoint, access, secret, stop, nil
			}
		}
		if time.Now().After(deadline) {
			stop()
			return "", "", "", nil, errors.New("MinIO did not start")
		}
	}
}
