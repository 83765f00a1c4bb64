package main

// A reverse proxy in front of the test MinIO that counts and holds what passes.

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"testing"

	"github.com/azaion/loader/internal/refapi"
	"github.com/azaion/loader/internal/streams"
	"github.com/azaion/loader/internal/testenv"
)

// cdnProxy is an HTTP reverse proxy in front of MinIO that counts the body bytes of the GET
// answers it passes to the loader (the CDN bytes downloaded, counted at the S3 side), and can
// hold the bodies of large PUTs after a number of bytes. It forwards the Host header the
// loader signed.
type cdnProxy struct {
	*httptest.Server
	mu        sync.Mutex
	got       int64
	hold      chan struct{} // when not nil, PUT bodies stop after holdAfter bytes until closed
	holdAfter int64
	holding   chan struct{} // closed when a PUT body got to holdAfter
}

func newCDNProxy(t *testing.T, m testenv.MinIOServer) *cdnProxy {
	t.Helper()
	target, _ := url.Parse(m.URL())
	p := &cdnProxy{}
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target)
		r.Out.Host = r.In.Host // the Host the loader signed
		p.mu.Lock()
		hold, after, holding := p.hold, p.holdAfter, p.holding
		p.mu.Unlock()
		if r.Out.Method == http.MethodPut && hold != nil && r.Out.ContentLength > after {
			r.Out.Body = testenv.HeldBody(r.Out.Body, after, hold, nil, func() { close(holding) })
		}
	}}
	rp.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.Method == http.MethodGet {
			resp.Body = streams.ReadCloser(streams.OnRead(resp.Body, p.count), resp.Body)
		}
		return nil
	}
	rp.ErrorLog = nil
	p.Server = httptest.NewServer(rp)
	t.Cleanup(p.Close)
	return p
}

// received is how many GET body bytes went to the loader since the last reset.
func (p *cdnProxy) received() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.got
}

func (p *cdnProxy) reset() {
	p.mu.Lock()
	p.got = 0
	p.mu.Unlock()
}

// holdPuts makes the next large PUT bodies stop after n bytes; the returned channel closes
// when one got there. release lets them go on.
func (p *cdnProxy) holdPuts(n int64) (holding <-chan struct{}, release func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hold, p.holdAfter, p.holding = make(chan struct{}), n, make(chan struct{})
	hold := p.hold
	var once sync.Once
	return p.holding, func() {
		once.Do(func() {
			close(hold)
			p.mu.Lock()
			p.hold = nil
			p.mu.Unlock()
		})
	}
}

// count adds n GET body bytes.
func (p *cdnProxy) count(n int) {
	p.mu.Lock()
	p.got += int64(n)
	p.mu.Unlock()
}

// cdnThrough is the test MinIO's settings with host replaced, as cdn.yaml would carry them.
func cdnThrough(m testenv.MinIOServer, host string) *refapi.CDNSettings {
	return &refapi.CDNSettings{Host: host,
		DownloaderAccessKey: m.AccessKey, DownloaderAccessSecret: m.SecretKey,
		UploaderAccessKey: m.AccessKey, UploaderAccessSecret: m.SecretKey}
}
