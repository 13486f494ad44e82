package httpmw

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetricsLabelRequestsByRouteTemplate(t *testing.T) {
	m := NewMetrics()
	mux := runtime.NewServeMux(runtime.WithMiddlewares(m.Route()))
	if err := mux.HandlePath(http.MethodGet, "/v1/videos/{video_id}", func(w http.ResponseWriter, _ *http.Request, _ map[string]string) {
		w.WriteHeader(http.StatusTeapot)
	}); err != nil {
		t.Fatal(err)
	}
	h := m.Wrap(mux)
	for _, path := range []string{"/v1/videos/a", "/v1/videos/b", "/nowhere"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, path, nil))
	}
	if got := testutil.ToFloat64(m.requests.WithLabelValues("/v1/videos/{video_id}", "GET", "418")); got != 2 {
		t.Fatalf("route requests: %v", got)
	}
	if got := testutil.ToFloat64(m.requests.WithLabelValues(Unmatched, "GET", "404")); got != 1 {
		t.Fatalf("unmatched requests: %v", got)
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if !strings.Contains(rec.Body.String(), "vidscan_gateway_http_request_duration_seconds_bucket") {
		t.Fatalf("no histogram in /metrics:\n%s", rec.Body.String()[:500])
	}
}
