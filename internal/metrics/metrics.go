// Package metrics holds the loader's Prometheus collectors for the domain packages: model
// traffic and cache use, upstream calls, re-logins and unlock runs. HTTP request metrics live
// in httpapi. Every method is safe on a nil *Metrics, so packages can take one optionally.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the loader's domain metrics.
type Metrics struct {
	bytesServed    prometheus.Counter
	bytesDecrypted *prometheus.CounterVec
	cache          *prometheus.CounterVec
	cdnBytes       prometheus.Counter
	upstream       *prometheus.CounterVec
	relogins       prometheus.Counter
	unlockRuns     *prometheus.CounterVec
	unlockDuration prometheus.Histogram
	unattended     *prometheus.CounterVec
}

// UnlockStates are the values the unlock state gauge is labelled with.
var UnlockStates = []string{"idle", "authenticating", "downloading_key", "decrypting", "loading_images", "ready", "error"}

// New creates the collectors and registers them with reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		bytesServed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "azaion_loader_resource_bytes_served_total",
			Help: "Decrypted resource bytes streamed to /load clients.",
		}),
		bytesDecrypted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "azaion_loader_bytes_decrypted_total",
			Help: "Bytes decrypted, by what: resource (streamed to /load) or archive (streamed to Docker).",
		}, []string{"what"}),
		cache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "azaion_loader_cache_lookups_total",
			Help: "Big-part cache lookups, by result: hit or miss.",
		}, []string{"result"}),
		cdnBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "azaion_loader_cdn_download_bytes_total",
			Help: "Bytes downloaded from the CDN into the cache.",
		}),
		upstream: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "azaion_loader_upstream_calls_total",
			Help: "Calls to the Resource API, by endpoint and outcome.",
		}, []string{"endpoint", "outcome"}),
		relogins: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "azaion_loader_relogins_total",
			Help: "Logins the loader made again by itself (token expiry, 401/403).",
		}),
		unlockRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "azaion_loader_unlock_runs_total",
			Help: "Unlock workflow runs, by outcome: ready or error.",
		}, []string{"outcome"}),
		unlockDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "azaion_loader_unlock_duration_seconds",
			Help:    "Duration of unlock workflow runs.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		}),
		unattended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "azaion_loader_unattended_attempts_total",
			Help: "Attempts of the unattended work (device identity), by step (login, unlock) and outcome: ok, retry (failed, will be retried) or failed (refused for good).",
		}, []string{"step", "outcome"}),
	}
	reg.MustRegister(m.bytesServed, m.bytesDecrypted, m.cache, m.cdnBytes, m.upstream, m.relogins,
		m.unlockRuns, m.unlockDuration, m.unattended)
	m.cache.WithLabelValues("hit")
	m.cache.WithLabelValues("miss")
	return m
}

// UnlockStatus is what WatchUnlock reads at every scrape.
type UnlockStatus func() (state string, bytesDone, bytesTotal int64)

// WatchUnlock registers the unlock workflow's current state and progress, read from status at
// scrape time, so the gauges can never disagree with GET /unlock/status.
func WatchUnlock(reg prometheus.Registerer, status UnlockStatus) {
	reg.MustRegister(unlockCollector{status})
}

var (
	unlockStateDesc = prometheus.NewDesc("azaion_loader_unlock_state",
		"1 for the unlock workflow's current state, 0 for the others.", []string{"state"}, nil)
	unlockDoneDesc = prometheus.NewDesc("azaion_loader_unlock_archive_bytes_done",
		"Archive bytes the current or last unlock run has decrypted.", nil, nil)
	unlockTotalDesc = prometheus.NewDesc("azaion_loader_unlock_archive_bytes_total",
		"Size of the archive the current or last unlock run decrypts.", nil, nil)
)

type unlockCollector struct{ status UnlockStatus }

func (unlockCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- unlockStateDesc
	ch <- unlockDoneDesc
	ch <- unlockTotalDesc
}

func (c unlockCollector) Collect(ch chan<- prometheus.Metric) {
	state, done, total := c.status()
	for _, s := range UnlockStates {
		v := 0.0
		if s == state {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(unlockStateDesc, prometheus.GaugeValue, v, s)
	}
	ch <- prometheus.MustNewConstMetric(unlockDoneDesc, prometheus.GaugeValue, float64(done))
	ch <- prometheus.MustNewConstMetric(unlockTotalDesc, prometheus.GaugeValue, float64(total))
}

// CacheHit counts a big part served from the cache.
func (m *Metrics) CacheHit() {
	if m != nil {
		m.cache.WithLabelValues("hit").Inc()
	}
}

// CacheMiss counts a big part that had to come from the CDN.
func (m *Metrics) CacheMiss() {
	if m != nil {
		m.cache.WithLabelValues("miss").Inc()
	}
}

// CDNDownloaded counts bytes fetched from the CDN.
func (m *Metrics) CDNDownloaded(n int64) {
	if m != nil {
		m.cdnBytes.Add(float64(n))
	}
}

// Served counts decrypted resource bytes streamed to a client.
func (m *Metrics) Served(n int64) {
	if m != nil {
		m.bytesServed.Add(float64(n))
		m.bytesDecrypted.WithLabelValues("resource").Add(float64(n))
	}
}

// UpstreamCall counts one Resource API call; outcome is e.g. "ok", "unauthorized", "unavailable".
func (m *Metrics) UpstreamCall(endpoint, outcome string) {
	if m != nil {
		m.upstream.WithLabelValues(endpoint, outcome).Inc()
	}
}

// Relogin counts a login the loader made again by itself.
func (m *Metrics) Relogin() {
	if m != nil {
		m.relogins.Inc()
	}
}

// UnlockFinished records a finished unlock run and the archive bytes it decrypted.
func (m *Metrics) UnlockFinished(outcome string, d time.Duration, archiveBytes int64) {
	if m != nil {
		m.unlockRuns.WithLabelValues(outcome).Inc()
		m.unlockDuration.Observe(d.Seconds())
		m.bytesDecrypted.WithLabelValues("archive").Add(float64(archiveBytes))
	}
}

// UnattendedAttempt counts one attempt of the unattended work.
func (m *Metrics) UnattendedAttempt(step, outcome string) {
	if m != nil {
		m.unattended.WithLabelValues(step, outcome).Inc()
	}
}

// CacheFigures are the model cache's figures, as GET /cache shows them (SPEC §11).
type CacheFigures struct {
	Bytes  int64          // on disk
	Max    int64          // MODEL_CACHE_MAX, 0 for none
	Parts  map[string]int // parts by state: cached, downloading, partial, queued
	States []string       // every state, so a state with no part reads 0
}

// WatchCache registers the model cache's figures, read from figures at scrape time, so the
// gauges can never disagree with GET /cache.
func WatchCache(reg prometheus.Registerer, figures func() (CacheFigures, error)) {
	reg.MustRegister(cacheCollector{figures})
}

var (
	cacheBytesDesc = prometheus.NewDesc("azaion_loader_cache_bytes",
		"Bytes of big parts (complete and partial) in the model cache.", nil, nil)
	cacheMaxDesc = prometheus.NewDesc("azaion_loader_cache_max_bytes",
		"MODEL_CACHE_MAX; absent when the cache has no cap.", nil, nil)
	cachePartsDesc = prometheus.NewDesc("azaion_loader_cache_parts",
		"Parts in the model cache by state: cached, downloading, partial, queued (for prefetch).", []string{"state"}, nil)
)

type cacheCollector struct {
	figures func() (CacheFigures, error)
}

func (cacheCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- cacheBytesDesc
	ch <- cacheMaxDesc
	ch <- cachePartsDesc
}

func (c cacheCollector) Collect(ch chan<- prometheus.Metric) {
	f, err := c.figures()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(cacheBytesDesc, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(cacheBytesDesc, prometheus.GaugeValue, float64(f.Bytes))
	if f.Max > 0 {
		ch <- prometheus.MustNewConstMetric(cacheMaxDesc, prometheus.GaugeValue, float64(f.Max))
	}
	for _, s := range f.States {
		ch <- prometheus.MustNewConstMetric(cachePartsDesc, prometheus.GaugeValue, float64(f.Parts[s]), s)
	}
}
