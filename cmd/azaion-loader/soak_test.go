package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestSoak runs 10,000 mixed requests at concurrency 32 against the built binary, in front of
// the reference API and MinIO: downloads whole and abandoned half-way, uploads, slow bodies,
// oversized and malformed bodies, bad names and routes. No answer may be a 5xx, and once the
// clients are gone the process must be back where it started: goroutines, file descriptors and
// resident memory within a small margin.
func TestSoak(t *testing.T) {
	const total, workers = 10_000, 32
	e := newTestEnv(t, envOptions{minio: true}) // reference API and MinIO for the process
	p := startProcess(t, "RESOURCE_API_URL="+e.refSrv.URL, "MODEL_CACHE_DIR="+t.TempDir(), "LOG_DIR="+t.TempDir(),
		"REQUEST_BODY_TIMEOUT=2s") // short, for the slow bodies; long enough for 1 MiB on a busy machine
	addr := strings.TrimPrefix(p.url, "http://")
	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: workers, DisableCompression: true}}
	do := func(method, path, ctype string, body io.Reader) (*http.Response, error) {
		req, err := http.NewRequest(method, p.url+path, body)
		if err != nil {
			return nil, err
		}
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		return client.Do(req)
	}
	drain := func(resp *http.Response, err error) (int, []byte, error) {
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, b, err
	}

	// The account and two resources: a small one loaded whole, a bigger one abandoned half-way.
	if code, b, err := drain(do("POST", "/login", "application/json", strings.NewReader(testCreds()))); code != 200 {
		t.Fatalf("login: %d %s %v", code, b, err)
	}
	folder := folderFor(t)
	small, big := payload(100<<10, 31), payload(2<<20, 32)
	smallSum := sha256.Sum256(small)
	upload := func(name string, content []byte) (int, []byte, error) {
		var body bytes.Buffer
		mw := multipart.NewWriter(&body)
		mw.WriteField("folder", folder)
		fw, _ := mw.CreateFormFile("data", name)
		fw.Write(content)
		mw.Close()
		return drain(do("POST", "/upload/"+name, mw.FormDataContentType(), &body))
	}
	for name, content := range map[string][]byte{"small.bin": small, "big.bin": big} {
		if code, b, err := upload(name, content); code != 200 {
			t.Fatalf("upload %s: %d %s %v", name, code, b, err)
		}
	}
	loadBody := `{"folder":"` + folder + `"}`

	var uploads atomic.Int64
	type kind struct {
		name   string
		weight int
		run    func() (int, error) // the status seen (0: none, as after hanging up)
	}
	kinds := []kind{
		{"health", 18, func() (int, error) { c, _, err := drain(do("GET", "/health", "", nil)); return c, err }},
		{"status", 8, func() (int, error) { c, _, err := drain(do("GET", "/status", "", nil)); return c, err }},
		{"unlock status", 3, func() (int, error) { c, _, err := drain(do("GET", "/unlock/status", "", nil)); return c, err }},
		{"metrics", 3, func() (int, error) { c, _, err := drain(do("GET", "/metrics", "", nil)); return c, err }},
		{"load", 25, func() (int, error) {
			c, b, err := drain(do("POST", "/load/small.bin", "application/json", strings.NewReader(loadBody)))
			if err == nil && c == 200 && sha256.Sum256(b) != smallSum {
				err = fmt.Errorf("/load gave %d bytes that are not the upload", len(b))
			}
			return c, err
		}},
		{"load abandoned half-way", 6, func() (int, error) {
			resp, err := do("POST", "/load/big.bin", "application/json", strings.NewReader(loadBody))
			if err != nil {
				return 0, err
			}
			_, err = io.CopyN(io.Discard, resp.Body, 256<<10)
			resp.Body.Close() // mid-body: the transport drops the connection
			return resp.StatusCode, err
		}},
		{"load unknown", 5, func() (int, error) {
			c, _, err := drain(do("POST", "/load/nothing.bin", "application/json", strings.NewReader(loadBody)))
			return c, err
		}},
		{"upload", 2, func() (int, error) {
			c, _, err := upload(fmt.Sprintf("u%d.bin", uploads.Add(1)), small[:10<<10])
			return c, err
		}},
		{"slow body", 3, func() (int, error) { return slowBody(addr) }},
		{"oversized body", 5, func() (int, error) {
			c, _, err := drain(do("POST", "/login", "application/json", strings.NewReader(`{"email":"`+strings.Repeat("e", 1<<20)+`"}`)))
			return c, err
		}},
		{"malformed JSON", 6, func() (int, error) {
			c, _, err := drain(do("POST", "/unlock", "application/json", strings.NewReader(`{"email":`)))
			return c, err
		}},
		{"malformed multipart", 4, func() (int, error) {
			c, _, err := drain(do("POST", "/upload/x.bin", "multipart/form-data; boundary=zz", strings.NewReader("--zz\r\nno headers")))
			return c, err
		}},
		{"bad name", 5, func() (int, error) {
			c, _, err := drain(do("POST", "/load/%c0%ae%c0%ae", "application/json", strings.NewReader(loadBody)))
			return c, err
		}},
		{"no route", 4, func() (int, error) { c, _, err := drain(do("DELETE", "/status", "", nil)); return c, err }},
	}
	var schedule []int
	for i, k := range kinds {
		for range k.weight {
			schedule = append(schedule, i)
		}
	}
	run := func(n int) (map[string]map[int]int, []string) {
		var mu sync.Mutex
		counts := map[string]map[int]int{}
		var problems []string
		var next atomic.Int64
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for {
					i := int(next.Add(1)) - 1
					if i >= n {
						return
					}
					k := kinds[schedule[(i*7919)%len(schedule)]] // spread the kinds over the run
					code, err := k.run()
					mu.Lock()
					if counts[k.name] == nil {
						counts[k.name] = map[int]int{}
					}
					counts[k.name][code]++
					if (err != nil || code >= 500 || code == 0) && len(problems) < 20 {
						problems = append(problems, fmt.Sprintf("%s: %d %v", k.name, code, err))
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		return counts, problems
	}

	// Warm-up: every kind a few times, so pools and caches that live on are filled before the
	// baseline is taken.
	if _, problems := run(300); len(problems) > 0 {
		t.Fatalf("warm-up: %v", problems)
	}
	client.CloseIdleConnections()
	var base sample
	waitUntil(t, time.Minute, "the warm-up connections closed", func() bool { base = p.sample(t); return base.conns == 0 })

	start := time.Now()
	counts, problems := run(total)
	took := time.Since(start)
	for _, pr := range problems {
		t.Error(pr)
	}
	for _, k := range kinds {
		t.Logf("%-24s %v", k.name, counts[k.name])
	}
	for name, want := range map[string]int{"slow body": 408, "oversized body": 413, "malformed JSON": 422, "malformed multipart": 422,
		"bad name": 422, "no route": 405, "load unknown": 404, "upload": 200, "load": 200} {
		for code, n := range counts[name] {
			if code != want {
				t.Errorf("%s: %d answers %d, want %d", name, n, code, want)
			}
		}
	}

	client.CloseIdleConnections()
	var after sample
	settled := func() bool {
		after = p.sample(t)
		return after.conns == 0 && after.goroutines <= base.goroutines+5 && after.fds <= base.fds+5
	}
	deadline := time.Now().Add(time.Minute)
	for !settled() && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("%d requests in %v (%.0f/s); goroutines %d → %d, fds %d → %d, RSS %d → %d MiB",
		total, took.Round(time.Millisecond), total/took.Seconds(), base.goroutines, after.goroutines,
		base.fds, after.fds, base.rss>>20, after.rss>>20)
	if after.goroutines > base.goroutines+5 {
		t.Errorf("goroutines %d after the run, %d before", after.goroutines, base.goroutines)
	}
	if after.fds > base.fds+5 {
		t.Errorf("open files %d after the run, %d before", after.fds, base.fds)
	}
	// Go keeps freed heap for a while: a leak shows as growth well past one run's garbage.
	if after.rss > base.rss+64<<20 {
		t.Errorf("RSS %d MiB after the run, %d MiB before", after.rss>>20, base.rss>>20)
	}
	if strings.Contains(p.stderr.String(), "level=ERROR") {
		t.Errorf("the loader logged errors:\n%s", tail(p.stderr.String(), 20))
	}
}

// slowBody sends a request whose JSON body stops after a few bytes and waits for the answer.
func slowBody(addr string) (int, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	fmt.Fprint(c, "POST /login HTTP/1.1\r\nHost: loader\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"em")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
