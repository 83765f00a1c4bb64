package main

// Tests of the model cache and of uploads (SPEC §5, §11) with the built binary as a process,
// where restarts, signals, crashes of the parts and the process's own memory matter.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/azaion/loader/internal/testenv"
)

// TestResumeAfterKill: the loader is killed (SIGKILL) when about half of a 64 MiB big part is
// on disk; restarted, it continues the download where the durable bytes end: /load is
// byte-identical, and the CDN sends under 60 % of the part after the restart.
func TestResumeAfterKill(t *testing.T) {
	m := testenv.MinIO(t)
	proxy := newCDNProxy(t, m)
	e := newTestEnv(t, envOptions{minio: true, cdn: cdnThrough(m, proxy.URL)})
	folder := folderFor(t)
	const size = 64 << 20
	content := payload(size, 81)
	want := sha256.Sum256(content)
	e.seed(folder, "big.bin", content)
	content = nil
	bigSize := int64(encryptedLen(size) - 3072)

	cacheDir := t.TempDir()
	env := []string{"RESOURCE_API_URL=" + e.refSrv.URL, "MODEL_CACHE_DIR=" + cacheDir, "LOG_DIR=" + t.TempDir()}
	p := startProcess(t, append(env, "CDN_RATE_LIMIT=8MiB")...) // the half-way moment is easy to catch
	p.login(t)
	go p.load(t, folder, "big.bin") // dies with the process
	partial := filepath.Join(cacheDir, folder, ".big.bin.big.partial")
	waitUntil(t, 2*time.Minute, "half of the part on disk", func() bool { return fileSize(partial) >= bigSize/2 })
	p.kill(t)
	onDisk := fileSize(partial)
	t.Logf("killed with %d of %d bytes (%.0f %%) of the partial on disk", onDisk, bigSize, 100*float64(onDisk)/float64(bigSize))

	proxy.reset()
	p2 := startProcess(t, env...)
	p2.login(t)
	code, got := p2.load(t, folder, "big.bin")
	if code != http.StatusOK || sha256.Sum256(got) != want {
		t.Fatalf("/load after the restart: %d, %d bytes, identical %v", code, len(got), sha256.Sum256(got) == want)
	}
	after := proxy.received()
	t.Logf("CDN bytes after the restart: %d = %.1f %% of the part (a restart from zero: 100 %%)", after, 100*float64(after)/float64(bigSize))
	if float64(after) >= 0.6*float64(bigSize) {
		t.Errorf("downloaded %d bytes after the restart, %.0f %% of the part: want under 60 %%", after, 100*float64(after)/float64(bigSize))
	}
	if _, err := os.Stat(partial); err == nil {
		t.Error("the partial is still there after the download completed")
	}
}

// TestPrefetchFolderProcess: PREFETCH=folder/* over a folder of 3 resources: all 3 big parts
// are in the cache after the login, without any /load; GET /cache shows them cached, and the
// first /load is served from the cache.
func TestPrefetchFolderProcess(t *testing.T) {
	e := newTestEnv(t, envOptions{minio: true})
	folder := folderFor(t)
	content := map[string][]byte{}
	for i, n := range []string{"a.bin", "b.bin", "c.bin"} {
		content[n] = payload(1<<20+i, byte(90+i))
		e.seed(folder, n, content[n])
	}
	cacheDir := t.TempDir()
	p := startProcess(t, "RESOURCE_API_URL="+e.refSrv.URL, "MODEL_CACHE_DIR="+cacheDir, "LOG_DIR="+t.TempDir(),
		"PREFETCH="+folder+"/*")
	p.login(t)
	getCache := func() (st cacheStatus) { p.getJSON(t, "/cache", &st); return st }
	st := poll(t, "3 parts cached by prefetch", time.Minute, 50*time.Millisecond, getCache, func(st cacheStatus) bool {
		cached := 0
		for _, part := range st.Parts {
			if part.State == "cached" && part.Folder == folder {
				cached++
			}
		}
		return cached == 3
	})
	for _, part := range st.Parts {
		if part.Size == nil || part.Bytes != *part.Size || part.LastUsed == nil {
			t.Errorf("part %+v: want bytes = size and a time of last use (its download)", part)
		}
	}
	m := p.metrics(t)
	if n := m[`azaion_loader_http_requests_total{code="200",route="POST /load/{filename}"}`]; n != 0 {
		t.Fatalf("%v loads before the check", n)
	}
	if n := m[`azaion_loader_cache_parts{state="cached"}`]; n != 3 {
		t.Errorf("metric of cached parts: %v, want 3", n)
	}
	code, got := p.load(t, folder, "b.bin")
	if code != http.StatusOK || !bytes.Equal(got, content["b.bin"]) {
		t.Fatalf("load after prefetch: %d", code)
	}
	if hit := p.metrics(t)[`azaion_loader_cache_lookups_total{result="hit"}`]; hit != 1 {
		t.Errorf("the load after prefetch was no cache hit (%v hits)", hit)
	}
}

// TestUnlockCLIKeepsLiveTemps: the unlock command, run beside a live service sharing its
// MODEL_CACHE_DIR, does not sweep the service's temp files, and neither does a second
// service; once nobody else runs, a start sweeps what a dead run left.
func TestUnlockCLIKeepsLiveTemps(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "models"), 0o750)
	env := []string{"MODEL_CACHE_DIR=" + dir, "RESOURCE_API_URL=http://127.0.0.1:1", "LOG_DIR=" + t.TempDir()}
	live := startProcess(t, env...)
	tmp := filepath.Join(dir, "models", ".m.big.tmp-123456")
	if err := os.WriteFile(tmp, []byte("an upload in progress"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := runBin(t, ".", "", append(env, "AZAION_PASSWORD=x", "IMAGES_PATH="+filepath.Join(dir, "none.enc")), "unlock", "--email", testEmail)
	if r.code == 0 {
		t.Fatalf("unlock against a closed port succeeded:\n%s%s", r.stdout, r.stderr)
	}
	if _, err := os.Stat(tmp); err != nil {
		t.Fatalf("the unlock command removed a live service's temp file: %v\n%s%s", err, r.stdout, r.stderr)
	}
	second := startProcess(t, env...)
	if _, err := os.Stat(tmp); err != nil {
		t.Fatalf("a second service removed a live service's temp file: %v", err)
	}
	live.stop()
	second.stop()
	startProcess(t, env...)
	if _, err := os.Stat(tmp); err == nil {
		t.Fatal("a start with nobody else using the cache kept a dead run's temp file")
	}
}

// TestUploadMemory: 16 concurrent uploads of 40 MiB: every one succeeds, and the loader's
// peak RSS (VmHWM) stays under 48 MiB and within 8 MiB of the peak of 2 concurrent uploads:
// memory does not grow with the number of uploads. (Measured here: about 20 and 23 MiB; the
// S3 client's 16 MiB part buffer per upload made it 345 MiB for 16 uploads before.)
func TestUploadMemory(t *testing.T) {
	e := newTestEnv(t, envOptions{minio: true})
	folder := folderFor(t)
	content := payload(40<<20, 95)
	peak := func(n int) int64 {
		p := startProcess(t, "RESOURCE_API_URL="+e.refSrv.URL, "MODEL_CACHE_DIR="+t.TempDir(), "LOG_DIR="+t.TempDir())
		p.login(t)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				if code, body := p.upload(t, context.Background(), folder, fmt.Sprintf("m%d-%d.bin", n, i), content); code != http.StatusOK {
					t.Errorf("upload %d of %d: %d %s", i, n, code, body)
				}
			})
		}
		wg.Wait()
		hwm := p.vmStatus(t, "VmHWM")
		t.Logf("%2d concurrent 40 MiB uploads: peak RSS %.1f MiB", n, float64(hwm)/(1<<20))
		p.stop()
		return hwm
	}
	two, sixteen := peak(2), peak(16)
	if sixteen > 48<<20 {
		t.Errorf("peak RSS %.1f MiB with 16 uploads, want under 48 MiB", float64(sixteen)/(1<<20))
	}
	if sixteen-two > 8<<20 {
		t.Errorf("peak RSS grew by %.1f MiB from 2 to 16 uploads, want at most 8 MiB", float64(sixteen-two)/(1<<20))
	}
	e.login() // another device, with an empty cache
	if code, got, _ := e.load(folder, "m16-7.bin"); code != http.StatusOK || !bytes.Equal(got, content) {
		t.Errorf("an upload of the 16 does not load back: %d", code)
	}
}

// TestUploadPartsKilled: the reference API, then MinIO, killed with SIGKILL while an /upload
// is sending its big part: the upload ends in an error, never 200; started again, a retry
// succeeds and the resource loads back.
func TestUploadPartsKilled(t *testing.T) {
	m := testenv.MinIO(t)
	proxy := newCDNProxy(t, m)
	cdn := cdnThrough(m, proxy.URL)
	apiAddr, apiData := freeAddr(t), filepath.Join(t.TempDir(), "data")
	api := startRefapi(t, refapiSetup{addr: apiAddr, dataDir: apiData, cdn: cdn})
	p := startProcess(t, "RESOURCE_API_URL="+api.url, "MODEL_CACHE_DIR="+t.TempDir(), "LOG_DIR="+t.TempDir(),
		"CDN_STALL_TIMEOUT=5s")
	p.login(t)
	folder := folderFor(t)
	content := payload(8<<20, 96)

	// upload sends content while the CDN holds its body half-way; crash runs then, and the
	// body goes on.
	upload := func(name string, crash func()) int {
		holding, release := proxy.holdPuts(2 << 20)
		defer release()
		codec := make(chan int, 1)
		go func() {
			code, body := p.upload(t, context.Background(), folder, name, content)
			t.Logf("upload %s: %d %.200s", name, code, body)
			codec <- code
		}()
		select {
		case <-holding:
		case code := <-codec:
			t.Fatalf("the upload ended (%d) before its big part reached the CDN", code)
		}
		crash()
		release()
		return <-codec
	}

	parent := t
	t.Run("refapi", func(t *testing.T) {
		code := upload("a.bin", api.kill)
		if code == http.StatusOK {
			t.Fatal("an upload whose Resource API was killed answered 200")
		}
		startRefapi(parent, refapiSetup{addr: apiAddr, dataDir: apiData, cdn: cdn}) // for the next subtest too
		if code, body := p.upload(t, context.Background(), folder, "a.bin", content); code != http.StatusOK {
			t.Fatalf("retry after the Resource API came back: %d %s", code, body)
		}
		if code, got := p.load(t, folder, "a.bin"); code != http.StatusOK || !bytes.Equal(got, content) {
			t.Fatalf("load after the retry: %d", code)
		}
	})
	t.Run("minio", func(t *testing.T) {
		code := upload("b.bin", func() { testenv.KillMinIO(t) })
		if code == http.StatusOK {
			t.Fatal("an upload whose CDN was killed answered 200")
		}
		testenv.StartMinIO(t)
		if code, body := p.upload(t, context.Background(), folder, "b.bin", content); code != http.StatusOK {
			t.Fatalf("retry after MinIO came back: %d %s", code, body)
		}
		if code, got := p.load(t, folder, "b.bin"); code != http.StatusOK || !bytes.Equal(got, content) {
			t.Fatalf("load after the retry: %d", code)
		}
	})
}

// TestUploadCDNFrozen: MinIO frozen (SIGSTOP) during a 64 MiB /upload: the upload ends with
// 502 within CDN_STALL_TIMEOUT plus a margin, nothing is committed, and its temp file,
// goroutines and descriptors are freed; also when the client has already gone.
func TestUploadCDNFrozen(t *testing.T) {
	const stall = 3 * time.Second
	e := newTestEnv(t, envOptions{minio: true})
	// Take the exclusive fault lock now (a pause waits for other packages' MinIO tests to end):
	// the pause below must come at once, before the loader has sent its 64 MiB.
	testenv.PauseMinIO(t)
	testenv.ResumeMinIO(t)
	folder := folderFor(t)
	cacheDir := t.TempDir()
	p := startProcess(t, "RESOURCE_API_URL="+e.refSrv.URL, "MODEL_CACHE_DIR="+cacheDir, "LOG_DIR="+t.TempDir(),
		"CDN_STALL_TIMEOUT="+stall.String())
	p.login(t)
	if code, body := p.upload(t, context.Background(), folder, "warm.bin", payload(100<<10, 97)); code != http.StatusOK {
		t.Fatalf("warm-up upload: %d %s", code, body)
	}
	goroutines := func() float64 { return p.metrics(t)["go_goroutines"] }
	baseG, baseFD := goroutines(), p.fds(t)
	content := payload(64<<20, 98)

	for _, gone := range []bool{false, true} {
		name := fmt.Sprintf("frozen-%v.bin", gone)
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			pr, pw := io.Pipe()
			sent := make(chan struct{})
			go func() {
				multipartWriter(pw, folder, name, content)()
				close(sent)
			}()
			codec := make(chan int, 1)
			go func() {
				code, _ := p.send(ctx, "POST", "/upload/"+name, "multipart/form-data; boundary="+testBoundary, pr)
				codec <- code
			}()
			<-sent
			// The loader has written the whole big part to its cache: what is left is the CDN's
			// (the freeze comes before or while the loader sends it; either way the CDN takes
			// nothing more).
			bigSize := int64(encryptedLen(len(content)) - 3072)
			waitUntil(t, time.Minute, "the big part in the cache's temp file", func() bool {
				for _, f := range walkFiles(cacheDir) {
					if strings.Contains(f, "."+name+".big.tmp-") && fileSize(f) == bigSize {
						return true
					}
				}
				return false
			})
			testenv.PauseMinIO(t)
			frozen := time.Now()
			if gone {
				cancel() // the client leaves
			} else {
				code := <-codec
				took := time.Since(frozen)
				t.Logf("502 after %v with the CDN frozen (CDN_STALL_TIMEOUT %v)", took.Round(time.Millisecond), stall)
				if code != http.StatusBadGateway {
					t.Fatalf("upload to a frozen CDN: %d, want 502", code)
				}
				if took > 2*stall+15*time.Second {
					t.Errorf("the upload took %v to end, want within CDN_STALL_TIMEOUT %v plus a margin", took, stall)
				}
			}
			var left string
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("left: %s", left)
				}
			})
			waitUntil(t, 2*stall+40*time.Second, "the upload's temp file, goroutines and descriptors freed", func() bool {
				var temps []string
				for _, f := range walkFiles(cacheDir) {
					if strings.Contains(f, name) {
						temps = append(temps, f)
					}
				}
				g, fd := goroutines(), p.fds(t)
				left = fmt.Sprintf("files %q, goroutines %v (before %v), descriptors %d (before %d)", temps, g, baseG, fd, baseFD)
				return len(temps) == 0 && g <= baseG && fd <= baseFD
			})
			t.Logf("freed %v after the freeze", time.Since(frozen).Round(time.Millisecond))
			testenv.ResumeMinIO(t)
			if _, err := e.minio.Client(t).StatObject(context.Background(), folder, name+".big", minio.StatObjectOptions{}); err == nil {
				t.Error("the CDN holds the big part of the failed upload")
			}
			if _, err := os.Stat(e.ref.ResourcePath(folder, name+".small")); err == nil {
				t.Error("the Resource API holds the small part of the failed upload")
			}
		})
	}
}
