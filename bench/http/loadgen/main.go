// Command loadgen is the load generator of bench/http, run as a process of its own so that
// its work is not counted against the server measured. It sends one kind of request and prints
// what it saw as JSON on stdout:
//
//	loadgen -url URL [-method GET] [-body S -content-type T] -rate 1000 -duration 10s
//	loadgen -url URL ... -workers 64 -duration 10s
//
// With -rate it is open-loop: request i is due at start + i/rate whatever the server does, and
// its latency counts from when it was due, not from when it could be sent, so a server that
// falls behind shows it in the percentiles (no coordinated omission). With -workers it is
// closed-loop: that many clients each send the next request when the last one is answered.
// The first -warmup of requests is not counted.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// Result is what loadgen prints.
type Result struct {
	Requests  int     `json:"requests"`
	Errors    int     `json:"errors"`
	FirstErr  string  `json:"firstError,omitempty"`
	RatePerS  float64 `json:"ratePerSecond"` // answered per second
	P50Ms     float64 `json:"p50ms"`
	P90Ms     float64 `json:"p90ms"`
	P99Ms     float64 `json:"p99ms"`
	MaxMs     float64 `json:"maxms"`
	BodyBytes int64   `json:"bodyBytes"` // of the last answer
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func run() error {
	url := flag.String("url", "", "the URL to request")
	method := flag.String("method", http.MethodGet, "HTTP method")
	body := flag.String("body", "", "request body")
	ctype := flag.String("content-type", "", "Content-Type of the body")
	rate := flag.Float64("rate", 0, "open loop: requests per second")
	workers := flag.Int("workers", 0, "closed loop: concurrent clients")
	duration := flag.Duration("duration", 10*time.Second, "how long to send counted requests")
	warmup := flag.Duration("warmup", time.Second, "how long to send uncounted requests first")
	wantLen := flag.Int64("want-bytes", -1, "answers of another length count as errors")
	flag.Parse()
	if *url == "" || (*rate > 0) == (*workers > 0) {
		return errors.New("want -url and one of -rate or -workers")
	}
	conns := *workers
	if conns == 0 {
		conns = 256 // open loop: enough for a server 256 requests behind
	}
	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{
		MaxIdleConns: conns, MaxIdleConnsPerHost: conns, DisableCompression: true,
	}}
	var mu sync.Mutex
	var lat []time.Duration
	var res Result
	do := func(due time.Time, counted bool) {
		req, err := http.NewRequest(*method, *url, strings.NewReader(*body))
		if err == nil && *ctype != "" {
			req.Header.Set("Content-Type", *ctype)
		}
		var n int64
		if err == nil {
			var resp *http.Response
			if resp, err = client.Do(req); err == nil {
				n, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				switch {
				case err != nil:
				case resp.StatusCode != http.StatusOK:
					err = fmt.Errorf("status %d", resp.StatusCode)
				case *wantLen >= 0 && n != *wantLen:
					err = fmt.Errorf("%d bytes, want %d", n, *wantLen)
				}
			}
		}
		d := time.Since(due)
		if !counted {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		res.Requests++
		res.BodyBytes = n
		if err != nil {
			if res.Errors++; res.FirstErr == "" {
				res.FirstErr = err.Error()
			}
			return
		}
		lat = append(lat, d)
	}

	start := time.Now()
	countFrom, end := start.Add(*warmup), start.Add(*warmup+*duration)
	var wg sync.WaitGroup
	if *rate > 0 {
		interval := time.Duration(float64(time.Second) / *rate)
		for i := 0; ; i++ {
			due := start.Add(time.Duration(i) * interval)
			if !due.Before(end) {
				break
			}
			time.Sleep(time.Until(due))
			wg.Go(func() { do(due, !due.Before(countFrom)) })
		}
	} else {
		for range *workers {
			wg.Go(func() {
				for now := time.Now(); now.Before(end); now = time.Now() {
					do(now, !now.Before(countFrom))
				}
			})
		}
	}
	wg.Wait()
	elapsed := time.Since(countFrom)
	if len(lat) == 0 {
		return fmt.Errorf("no request answered: %d errors, first %s", res.Errors, res.FirstErr)
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	res.P50Ms, res.P90Ms, res.P99Ms = pct(0.50), pct(0.90), pct(0.99)
	res.MaxMs = float64(lat[len(lat)-1].Microseconds()) / 1000
	res.RatePerS = float64(len(lat)) / elapsed.Seconds()
	return json.NewEncoder(os.Stdout).Encode(res)
}
