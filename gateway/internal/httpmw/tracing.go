package httpmw

import (
	"net/http"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// RequestIDAttribute is the span attribute that carries the request's X-Request-Id.
const RequestIDAttribute = "vidscan.request_id"

// Trace gives every request a server span (otelhttp, with the global TracerProvider
// and propagator, so an incoming W3C traceparent makes it a child). The span is named
// after the method ("GET") and renamed "GET /v1/videos/{video_id}" by TraceRoute once
// the mux has matched a route. Health probes and /metrics are not traced (Traced).
func Trace(next http.Handler) http.Handler {
	return otelhttp.NewHandler(next, "vidscan-gateway",
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return spanMethod(r.Method) }),
		otelhttp.WithFilter(Traced),
	)
}

// Traced is false for the requests that get no span: /healthz (probes) and /metrics.
func Traced(r *http.Request) bool {
	switch r.URL.Path {
	case "/healthz", "/metrics":
		return false
	}
	return true
}

// TraceRoute is the ServeMux middleware that names the request's span after the
// matched route template ("POST /v1/dashboard/upload/{session_id}", never the raw
// path with its ids) and sets http.route. Unmatched requests (404, 405) keep the
// bare method.
func TraceRoute() runtime.Middleware {
	return func(next runtime.HandlerFunc) runtime.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request, params map[string]string) {
			if pattern, ok := runtime.HTTPPattern(r.Context()); ok {
				if span := trace.SpanFromContext(r.Context()); span.IsRecording() {
					route := template(pattern)
					span.SetName(spanMethod(r.Method) + " " + route)
					span.SetAttributes(attribute.String("http.route", route))
				}
			}
			next(w, r, params)
		}
	}
}

// spanMethod is the method for span names; an unknown method is "HTTP" (as in the
// HTTP semantic conventions), so that arbitrary tokens do not make new span names.
func spanMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return m
	}
	return "HTTP"
}
