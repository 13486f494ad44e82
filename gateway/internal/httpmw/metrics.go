package httpmw

import (
	"context"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Unmatched is the route label of a request no route took (404, 405).
const Unmatched = "unmatched"

type routeKey struct{}

// Metrics are the gateway's Prometheus metrics: HTTP requests by route (the
// grpc-gateway path template, e.g. /v1/videos/{video_id}), method and status;
// their duration; requests in flight; plus the Go runtime and process collectors.
type Metrics struct {
	Registry *prometheus.Registry
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inFlight prometheus.Gauge
}

// NewMetrics registers the collectors on a registry of their own.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vidscan_gateway_http_requests_total",
			Help: "HTTP requests answered, by route template, method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "vidscan_gateway_http_request_duration_seconds",
			Help:    "Time to answer an HTTP request, by route template and method.",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"route", "method"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vidscan_gateway_http_requests_in_flight",
			Help: "HTTP requests being served.",
		}),
	}
	m.Registry.MustRegister(m.requests, m.duration, m.inFlight,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Wrap counts every request that reaches next (the whole handler, routing errors
// included); the route label is filled in by Route once the mux has matched one.
func (m *Metrics) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		route := Unmatched
		r = r.WithContext(context.WithValue(r.Context(), routeKey{}, &route))
		rw := &statusWriter{ResponseWriter: w}
		m.inFlight.Inc()
		start := time.Now()
		defer func() {
			m.inFlight.Dec()
			status := rw.status
			if status == 0 {
				status = http.StatusOK
			}
			m.requests.WithLabelValues(route, r.Method, strconv.Itoa(status)).Inc()
			m.duration.WithLabelValues(route, r.Method).Observe(time.Since(start).Seconds())
		}()
		next.ServeHTTP(rw, r)
	})
}

// Route is the ServeMux middleware that records the matched route's template.
func (m *Metrics) Route() runtime.Middleware {
	return func(next runtime.HandlerFunc) runtime.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request, params map[string]string) {
			if pattern, ok := runtime.HTTPPattern(r.Context()); ok {
				if route, ok := r.Context().Value(routeKey{}).(*string); ok {
					*route = template(pattern)
				}
			}
			next(w, r, params)
		}
	}
}

// singleSegment matches a capture of one path segment in Pattern.String():
// "{video_id=*}" is the template's "{video_id}".
var singleSegment = regexp.MustCompile(`\{([^=}]+)=\*\}`)

// template is the route's path template, e.g. /v1/videos/{video_id}.
func template(p runtime.Pattern) string {
	return singleSegment.ReplaceAllString(p.String(), "{$1}")
}

// Handler serves the registry as /metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}
