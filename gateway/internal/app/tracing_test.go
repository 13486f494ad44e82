package app

// The handler with tracing on: server spans named by route, the gRPC client spans as
// their children, traceparent metadata upstream, untraced health probes.

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	vidscanv1 "github.com/vidscan/vidscan/gateway/gen/vidscan/v1"
	"github.com/vidscan/vidscan/gateway/internal/httpmw"
	"github.com/vidscan/vidscan/gateway/internal/tracing"
	"github.com/vidscan/vidscan/gateway/internal/upload"
)

const (
	parentTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	parentSpan  = "00f067aa0ba902b7"
	traceparent = "00-" + parentTrace + "-" + parentSpan + "-01"
)

// traced installs an in-memory exporter as the global provider for the test.
func traced(t *testing.T) *tracetest.InMemoryExporter {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(tracing.Propagator())
	t.Cleanup(func() {
		_ = tp.Shutdown(t.Context())
		otel.SetTracerProvider(noop.NewTracerProvider())
		otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator())
	})
	return exp
}

// waitSpan waits for an ended span called name: the server span ends after the
// response has been written, so the client may see the response first.
func waitSpan(t *testing.T, exp *tracetest.InMemoryExporter, name string) tracetest.SpanStub {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, s := range exp.GetSpans() {
			if s.Name == name {
				return s
			}
		}
		if time.Now().After(deadline) {
			var names []string
			for _, s := range exp.GetSpans() {
				names = append(names, s.Name)
			}
			t.Fatalf("no span %q; have %q", name, names)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func attr(s tracetest.SpanStub, key string) string {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key {
			return kv.Value.Emit()
		}
	}
	return ""
}

func rpcSpanName(fullMethod string) string { return strings.TrimPrefix(fullMethod, "/") }

func TestTracingSpans(t *testing.T) {
	exp := traced(t)
	e := setupWith(t, upload.Config{}, true)
	base := e.srv.URL

	// A generated route, continuing the caller's trace.
	resp, m := do(t, "GET", base+"/v1/videos/v1", "", nil, "traceparent", traceparent, "X-Request-Id", "rid-trace")
	if resp.StatusCode != 200 {
		t.Fatalf("%d %v", resp.StatusCode, m)
	}
	srv := waitSpan(t, exp, "GET /v1/videos/{video_id}")
	if srv.SpanKind != trace.SpanKindServer || srv.SpanContext.TraceID().String() != parentTrace ||
		srv.Parent.SpanID().String() != parentSpan || !srv.Parent.IsRemote() {
		t.Errorf("server span: kind %v trace %s parent %s", srv.SpanKind, srv.SpanContext.TraceID(), srv.Parent.SpanID())
	}
	if got := attr(srv, httpmw.RequestIDAttribute); got != "rid-trace" {
		t.Errorf("%s = %q", httpmw.RequestIDAttribute, got)
	}
	if got := attr(srv, "http.route"); got != "/v1/videos/{video_id}" {
		t.Errorf("http.route = %q", got)
	}
	if got := attr(srv, "http.response.status_code"); got != "200" {
		t.Errorf("http.response.status_code = %q", got)
	}
	cli := waitSpan(t, exp, rpcSpanName(vidscanv1.AnalysisService_GetVideo_FullMethodName))
	if cli.SpanKind != trace.SpanKindClient || cli.Parent.SpanID() != srv.SpanContext.SpanID() ||
		cli.SpanContext.TraceID() != srv.SpanContext.TraceID() {
		t.Errorf("client span: kind %v parent %s, want child of %s", cli.SpanKind, cli.Parent.SpanID(), srv.SpanContext.SpanID())
	}

	// traceparent metadata reaches the server: the client span's context.
	exp.Reset()
	resp, m = do(t, "POST", base+"/v1/dashboard/upload/sessions", "application/json", strings.NewReader(`{}`))
	if resp.StatusCode != 200 {
		t.Fatalf("%d %v", resp.StatusCode, m)
	}
	srv = waitSpan(t, exp, "POST /v1/dashboard/upload/sessions")
	cli = waitSpan(t, exp, rpcSpanName(vidscanv1.UploadService_CreateUploadSession_FullMethodName))
	want := "00-" + srv.SpanContext.TraceID().String() + "-" + cli.SpanContext.SpanID().String() + "-01"
	e.fake.mu.Lock()
	got := e.fake.md.Get("traceparent")
	e.fake.mu.Unlock()
	if len(got) != 1 || got[0] != want {
		t.Errorf("traceparent metadata %q, want %q", got, want)
	}
	if cli.Parent.SpanID() != srv.SpanContext.SpanID() || srv.Parent.IsValid() {
		t.Errorf("new root %v, client parent %s", srv.Parent, cli.Parent.SpanID())
	}

	// The streaming upload route: UploadVideo is a child of the request's span.
	exp.Reset()
	ctype, body := form(t, part{name: "file", filename: "c.mp4", value: strings.Repeat("x", 3000)})
	resp, m = do(t, "POST", base+"/v1/dashboard/upload/s1", ctype, bytes.NewReader(body), "traceparent", traceparent)
	if resp.StatusCode != 201 {
		t.Fatalf("%d %v", resp.StatusCode, m)
	}
	srv = waitSpan(t, exp, "POST "+upload.Pattern)
	cli = waitSpan(t, exp, rpcSpanName(vidscanv1.UploadService_UploadVideo_FullMethodName))
	if srv.Parent.SpanID().String() != parentSpan || cli.Parent.SpanID() != srv.SpanContext.SpanID() ||
		cli.SpanContext.TraceID().String() != parentTrace {
		t.Errorf("upload spans: server parent %s, client parent %s (server %s)", srv.Parent.SpanID(), cli.Parent.SpanID(), srv.SpanContext.SpanID())
	}
	if got := attr(srv, "http.route"); got != upload.Pattern {
		t.Errorf("upload http.route = %q", got)
	}
	<-e.fake.done
	e.fake.mu.Lock()
	got = e.fake.md.Get("traceparent")
	e.fake.mu.Unlock()
	if len(got) != 1 || !strings.HasPrefix(got[0], "00-"+parentTrace+"-"+cli.SpanContext.SpanID().String()) {
		t.Errorf("UploadVideo traceparent metadata %q", got)
	}

	// /healthz (and its Health/Check upstream) is not traced; an unmatched route keeps
	// the bare method.
	exp.Reset()
	if resp, m = do(t, "GET", base+"/healthz", "", nil); resp.StatusCode != 200 {
		t.Fatalf("healthz %d %v", resp.StatusCode, m)
	}
	if resp, m = do(t, "GET", base+"/v1/nothing/42", "", nil); resp.StatusCode != 404 {
		t.Fatalf("unmatched %d %v", resp.StatusCode, m)
	}
	un := waitSpan(t, exp, "GET")
	if attr(un, "http.route") != "" || attr(un, "http.response.status_code") != "404" {
		t.Errorf("unmatched span attributes %v", un.Attributes)
	}
	for _, s := range exp.GetSpans() {
		if s.Name != "GET" {
			t.Errorf("unexpected span %q (%v)", s.Name, s.Attributes)
		}
	}
}

// With tracing off (the default) nothing is recorded even when a provider is set.
func TestTracingOff(t *testing.T) {
	exp := traced(t)
	e := setup(t, upload.Config{})
	resp, _ := do(t, "POST", e.srv.URL+"/v1/dashboard/upload/sessions", "application/json", strings.NewReader(`{}`),
		"traceparent", traceparent)
	if resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	time.Sleep(50 * time.Millisecond)
	if n := len(exp.GetSpans()); n != 0 {
		t.Errorf("%d spans with tracing off", n)
	}
	e.fake.mu.Lock()
	defer e.fake.mu.Unlock()
	if got := e.fake.md.Get("traceparent"); len(got) != 0 {
		t.Errorf("traceparent forwarded with tracing off: %q", got)
	}
}
