package tracing

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace/noop"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

func lookup(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func TestDecide(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     []string
		want    []Exporter
		ignored []string
		wantErr bool
	}{
		{name: "nothing set: off"},
		{name: "otlp", env: []string{"OTEL_TRACES_EXPORTER", "otlp"}, want: []Exporter{OTLPGRPC}},
		{name: "OTLP upper case, spaces", env: []string{"OTEL_TRACES_EXPORTER", " OTLP "}, want: []Exporter{OTLPGRPC}},
		{name: "console", env: []string{"OTEL_TRACES_EXPORTER", "console"}, want: []Exporter{Console}},
		{name: "otlp and console", env: []string{"OTEL_TRACES_EXPORTER", "otlp,console,otlp"}, want: []Exporter{OTLPGRPC, Console}},
		{name: "none", env: []string{"OTEL_TRACES_EXPORTER", "none"}},
		{name: "none beats an endpoint", env: []string{"OTEL_TRACES_EXPORTER", "none", "OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"}},
		{name: "none in a list", env: []string{"OTEL_TRACES_EXPORTER", "otlp,none"}},
		{name: "endpoint alone", env: []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"}, want: []Exporter{OTLPGRPC}},
		{name: "traces endpoint alone", env: []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/v1/traces",
			"OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"}, want: []Exporter{OTLPHTTP}},
		{name: "blank endpoint: off", env: []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "  "}},
		{name: "protocol without exporter or endpoint: off", env: []string{"OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"}},
		{name: "sdk disabled", env: []string{"OTEL_SDK_DISABLED", "true", "OTEL_TRACES_EXPORTER", "otlp"}},
		{name: "sdk disabled TRUE", env: []string{"OTEL_SDK_DISABLED", "TRUE", "OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"}},
		{name: "sdk disabled=false", env: []string{"OTEL_SDK_DISABLED", "false", "OTEL_TRACES_EXPORTER", "otlp"}, want: []Exporter{OTLPGRPC}},
		{name: "http/protobuf", env: []string{"OTEL_TRACES_EXPORTER", "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"}, want: []Exporter{OTLPHTTP}},
		{name: "traces protocol wins", env: []string{"OTEL_TRACES_EXPORTER", "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf",
			"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"}, want: []Exporter{OTLPGRPC}},
		{name: "traces protocol http", env: []string{"OTEL_TRACES_EXPORTER", "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc",
			"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"}, want: []Exporter{OTLPHTTP}},
		{name: "console ignores the protocol", env: []string{"OTEL_TRACES_EXPORTER", "console", "OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"}, want: []Exporter{Console}},
		{name: "http/json unsupported", env: []string{"OTEL_TRACES_EXPORTER", "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"}, wantErr: true},
		{name: "unsupported exporter ignored", env: []string{"OTEL_TRACES_EXPORTER", "zipkin"}, ignored: []string{"zipkin"}},
		{name: "unsupported exporter beside otlp", env: []string{"OTEL_TRACES_EXPORTER", "zipkin,otlp"}, want: []Exporter{OTLPGRPC}, ignored: []string{"zipkin"}},
		{name: "unsupported exporter, endpoint set: still off", env: []string{"OTEL_TRACES_EXPORTER", "jaeger",
			"OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"}, ignored: []string{"jaeger"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Decide(lookup(tc.env...))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if !reflect.DeepEqual(d.Exporters, tc.want) || d.Enabled() != (len(tc.want) > 0) {
				t.Errorf("exporters = %v (enabled %v), want %v", d.Exporters, d.Enabled(), tc.want)
			}
			if !reflect.DeepEqual(d.Ignored, tc.ignored) {
				t.Errorf("ignored = %v, want %v", d.Ignored, tc.ignored)
			}
			if d.Why == "" {
				t.Error("no reason")
			}
		})
	}
}

var otelEnv = []string{
	"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
	"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_INSECURE",
	"OTEL_EXPORTER_OTLP_TRACES_INSECURE", "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
	"OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
}

// cleanEnv blanks the OTEL_* environment for the test and restores the globals after.
func cleanEnv(t *testing.T, kv ...string) {
	t.Helper()
	for _, k := range otelEnv {
		t.Setenv(k, "")
	}
	for i := 0; i < len(kv); i += 2 {
		t.Setenv(kv[i], kv[i+1])
	}
	t.Cleanup(func() {
		otel.SetTracerProvider(noop.NewTracerProvider())
		otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator())
	})
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// emit starts and ends one span through the global provider and returns the
// traceparent the global propagator puts on the wire for it.
func emit(t *testing.T, name string) string {
	t.Helper()
	ctx, span := otel.Tracer("test").Start(context.Background(), name)
	carrier := propagation.MapCarrier{}
	otel.GetTextMapPropagator().Inject(ctx, carrier)
	span.End()
	return carrier["traceparent"]
}

func shutdown(t *testing.T, f func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	if err := f(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}

func TestSetupOffByDefault(t *testing.T) {
	cleanEnv(t)
	before := otel.GetTracerProvider()
	stop, on, err := Setup(context.Background(), quiet)
	if err != nil || on {
		t.Fatalf("Setup = %v, %v; want off", on, err)
	}
	shutdown(t, stop)
	if otel.GetTracerProvider() != before {
		t.Error("the global TracerProvider changed while tracing is off")
	}
	if tp := emit(t, "x"); tp != "" {
		t.Errorf("traceparent %q injected while tracing is off", tp)
	}
}

func TestSetupBadProtocol(t *testing.T) {
	cleanEnv(t, "OTEL_TRACES_EXPORTER", "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
	if _, on, err := Setup(context.Background(), quiet); err == nil || on {
		t.Fatalf("Setup = %v, %v; want an error", on, err)
	}
}

func TestSetupConsole(t *testing.T) {
	cleanEnv(t, "OTEL_TRACES_EXPORTER", "console")
	var out bytes.Buffer
	stop, on, err := setup(context.Background(), quiet, &out)
	if err != nil || !on {
		t.Fatalf("setup = %v, %v", on, err)
	}
	tp := emit(t, "console-span")
	if !strings.HasPrefix(tp, "00-") || !strings.HasSuffix(tp, "-01") {
		t.Errorf("traceparent = %q, want a sampled W3C one", tp)
	}
	shutdown(t, stop) // flushes the batch
	s := out.String()
	for _, want := range []string{`"Name":"console-span"`, `"Value":"vidscan-gateway"`, `"Key":"telemetry.sdk.language"`} {
		if !strings.Contains(s, want) {
			t.Errorf("console output lacks %s:\n%s", want, s)
		}
	}
}

func TestSetupSamplerFromEnv(t *testing.T) {
	// No sampler is passed to the SDK, so OTEL_TRACES_SAMPLER applies.
	cleanEnv(t, "OTEL_TRACES_EXPORTER", "console", "OTEL_TRACES_SAMPLER", "always_off")
	var out bytes.Buffer
	stop, on, err := setup(context.Background(), quiet, &out)
	if err != nil || !on {
		t.Fatalf("setup = %v, %v", on, err)
	}
	tp := emit(t, "dropped")
	shutdown(t, stop)
	if out.Len() != 0 {
		t.Errorf("always_off exported: %s", out.String())
	}
	if !strings.HasSuffix(tp, "-00") {
		t.Errorf("traceparent = %q, want the unsampled flag", tp)
	}
}

func TestServiceNameFromEnv(t *testing.T) {
	for _, tc := range []struct {
		env  []string
		want string
	}{
		{nil, DefaultServiceName},
		{[]string{"OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs,deployment.environment=test"}, "from-attrs"},
		{[]string{"OTEL_SERVICE_NAME", "from-name", "OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs"}, "from-name"},
	} {
		cleanEnv(t, tc.env...)
		res, err := newResource(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := res.Set().Value("service.name"); got.AsString() != tc.want {
			t.Errorf("%v: service.name = %q, want %q", tc.env, got.AsString(), tc.want)
		}
	}
}

// collector is a fake OTLP trace receiver.
type collector struct {
	collectortrace.UnimplementedTraceServiceServer
	mu  sync.Mutex
	got []*tracepb.ResourceSpans
}

func (c *collector) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got = append(c.got, req.GetResourceSpans()...)
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

func (c *collector) check(t *testing.T, span string) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range c.got {
		service := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				service = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				if s.GetName() == span {
					if service != DefaultServiceName {
						t.Errorf("service.name = %q", service)
					}
					return
				}
			}
		}
	}
	t.Errorf("the collector did not get span %q (got %v)", span, c.got)
}

func TestSetupOTLPGRPCPlaintext(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{}
	gs := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(gs, c)
	go func() { _ = gs.Serve(ln) }()
	defer gs.Stop()

	// The exporter reads the endpoint itself; http:// means plain-text gRPC.
	cleanEnv(t, "OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+ln.Addr().String())
	stop, on, err := Setup(context.Background(), quiet)
	if err != nil || !on {
		t.Fatalf("Setup = %v, %v", on, err)
	}
	emit(t, "grpc-span")
	shutdown(t, stop)
	c.check(t, "grpc-span")
}

func TestSetupOTLPHTTP(t *testing.T) {
	c := &collector{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			http.Error(w, "unexpected "+r.URL.Path, http.StatusNotFound)
			return
		}
		body, _ := io.ReadAll(r.Body)
		var req collectortrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(body, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		_, _ = c.Export(r.Context(), &req)
		w.Header().Set("Content-Type", "application/x-protobuf")
		out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
		_, _ = w.Write(out)
	}))
	defer srv.Close()

	cleanEnv(t, "OTEL_TRACES_EXPORTER", "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf",
		"OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	stop, on, err := Setup(context.Background(), quiet)
	if err != nil || !on {
		t.Fatalf("Setup = %v, %v", on, err)
	}
	emit(t, "http-span")
	shutdown(t, stop)
	c.check(t, "http-span")
}

func TestShutdownIsBounded(t *testing.T) {
	// A collector that never answers: the flush gives up with the context.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		var conns []net.Conn // held open, never read
		defer func() {
			for _, c := range conns {
				_ = c.Close()
			}
		}()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, conn)
		}
	}()
	cleanEnv(t, "OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+ln.Addr().String())
	stop, on, err := Setup(context.Background(), quiet)
	if err != nil || !on {
		t.Fatalf("Setup = %v, %v", on, err)
	}
	emit(t, "lost")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_ = stop(ctx)
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("shutdown took %s with a 300ms context", d)
	}
}
