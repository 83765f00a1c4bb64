package httpapi

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics counts requests by route and status and times them by route.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	return &metrics{
		requests: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "azaion_loader_http_requests_total",
			Help: "HTTP requests answered, by route pattern and status code.",
		}, []string{"route", "code"})),
		duration: register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "azaion_loader_http_request_duration_seconds",
			Help:    "Time to answer an HTTP request, body included, by route pattern.",
			Buckets: []float64{.001, .005, .025, .1, .5, 2.5, 10, 60, 300},
		}, []string{"route"})),
	}
}

// register registers c, or returns the collector registered before with the same description
// (a second Server on the same registry shares it).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	switch {
	case err == nil:
		return c
	case errors.As(err, &are):
		if prev, ok := are.ExistingCollector.(C); ok {
			return prev
		}
	}
	panic("httpapi: registering metrics: " + err.Error())
}

// observe records one answered request; m may be nil.
func (m *metrics) observe(route string, status int, d time.Duration) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
	m.duration.WithLabelValues(route).Observe(d.Seconds())
}

// handleMetrics serves Config.Gatherer in the Prometheus exposition format.
func (s *Server) handleMetrics() http.Handler {
	if s.gatherer == nil {
		return s.handle(func(http.ResponseWriter, *http.Request) error { return errMetricsDisabled })
	}
	return promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{})
}
