package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestNilMetricsAreSafe(t *testing.T) {
	var m *Metrics // packages take an optional *Metrics: every method must be a no-op on nil
	m.CacheHit()
	m.CacheMiss()
	m.CDNDownloaded(1)
	m.Served(1)
	m.UpstreamCall("login", "ok")
	m.Relogin()
	m.UnlockFinished("ready", time.Second, 1)
	m.UnattendedAttempt("login", "retry")
}

// values gathers reg into name{label="v",...} → value.
func values(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+`="`+l.GetValue()+`"`)
			}
			key := f.GetName()
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				out[key] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[key] = m.GetGauge().GetValue()
			case m.Histogram != nil:
				out[key+"_count"] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

func TestCountersAndUnlockState(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	m.CacheHit()
	m.CacheMiss()
	m.CacheMiss()
	m.Served(100)
	m.UpstreamCall("login", "401")
	m.UnlockFinished("error", 2*time.Second, 64)
	m.UnattendedAttempt("login", "retry")
	m.UnattendedAttempt("login", "retry")
	m.UnattendedAttempt("login", "ok")
	state, done := "decrypting", int64(10)
	WatchUnlock(reg, func() (string, int64, int64) { return state, done, 64 })

	check := func(want map[string]float64) {
		t.Helper()
		got := values(t, reg)
		for k, v := range want {
			if g, ok := got[k]; !ok || g != v {
				t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
			}
		}
	}
	check(map[string]float64{
		`azaion_loader_cache_lookups_total{result="hit"}`:                       1,
		`azaion_loader_cache_lookups_total{result="miss"}`:                      2,
		`azaion_loader_resource_bytes_served_total`:                             100,
		`azaion_loader_bytes_decrypted_total{what="resource"}`:                  100,
		`azaion_loader_bytes_decrypted_total{what="archive"}`:                   64,
		`azaion_loader_upstream_calls_total{endpoint="login",outcome="401"}`:    1,
		`azaion_loader_unlock_runs_total{outcome="error"}`:                      1,
		`azaion_loader_unlock_duration_seconds_count`:                           1,
		`azaion_loader_unlock_state{state="decrypting"}`:                        1,
		`azaion_loader_unlock_state{state="ready"}`:                             0,
		`azaion_loader_unlock_archive_bytes_done`:                               10,
		`azaion_loader_unlock_archive_bytes_total`:                              64,
		`azaion_loader_unattended_attempts_total{outcome="retry",step="login"}`: 2,
		`azaion_loader_unattended_attempts_total{outcome="ok",step="login"}`:    1,
	})
	state, done = "ready", 64 // read at scrape time, not at registration
	check(map[string]float64{
		`azaion_loader_unlock_state{state="decrypting"}`: 0,
		`azaion_loader_unlock_state{state="ready"}`:      1,
		`azaion_loader_unlock_archive_bytes_done`:        64,
	})
}
