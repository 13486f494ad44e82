// Package tracing sets up OpenTelemetry tracing for the gateway from the standard
// OTEL_* environment. It is off unless that environment asks for it:
//
//   - OTEL_SDK_DISABLED=true turns it off, whatever else is set;
//   - OTEL_TRACES_EXPORTER (comma list): "otlp" and/or "console" turn it on, "none"
//     turns it off, other names are ignored (with a warning in the log);
//   - with OTEL_TRACES_EXPORTER unset or empty, OTEL_EXPORTER_OTLP_ENDPOINT or
//     OTEL_EXPORTER_OTLP_TRACES_ENDPOINT turns it on with "otlp".
//
// The OTLP exporter speaks gRPC (otlptracegrpc), or HTTP (otlptracehttp) when
// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL / OTEL_EXPORTER_OTLP_PROTOCOL is "http/protobuf";
// the exporters read the endpoint, insecure, headers, timeout, compression and
// certificate variables themselves. "console" writes one JSON line per span to stdout.
// The SDK reads OTEL_TRACES_SAMPLER(_ARG), OTEL_BSP_* and OTEL_SPAN_* itself; the
// resource comes from OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME, with service.name
// "vidscan-gateway" by default. The propagator is W3C tracecontext + baggage.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc/stats"
)

// DefaultServiceName is service.name unless OTEL_SERVICE_NAME or
// OTEL_RESOURCE_ATTRIBUTES set it.
const DefaultServiceName = "vidscan-gateway"

// ShutdownTimeout bounds the final flush of buffered spans at exit.
const ShutdownTimeout = 5 * time.Second

// Exporter is one span exporter the environment asks for.
type Exporter string

const (
	OTLPGRPC Exporter = "otlp/grpc"          // otlptracegrpc
	OTLPHTTP Exporter = "otlp/http/protobuf" // otlptracehttp
	Console  Exporter = "console"            // stdouttrace, to stdout
)

// Decision is what the environment asks for.
type Decision struct {
	Exporters []Exporter // empty: tracing is off
	Why       string     // why it is on or off, for the log
	Ignored   []string   // OTEL_TRACES_EXPORTER entries this gateway does not support
}

// Enabled reports whether tracing is on.
func (d Decision) Enabled() bool { return len(d.Exporters) > 0 }

// Decide reads the environment through getenv (os.Getenv in production). It fails
// only for an OTLP protocol the Go exporters do not speak (e.g. "http/json").
func Decide(getenv func(string) string) (Decision, error) {
	env := func(k string) string { return strings.ToLower(strings.TrimSpace(getenv(k))) }
	if env("OTEL_SDK_DISABLED") == "true" {
		return Decision{Why: "OTEL_SDK_DISABLED=true"}, nil
	}
	var d Decision
	var names []string
	if list := env("OTEL_TRACES_EXPORTER"); list != "" {
		for _, n := range strings.Split(list, ",") {
			switch n = strings.TrimSpace(n); n {
			case "":
			case "none":
				return Decision{Why: "OTEL_TRACES_EXPORTER=none"}, nil
			case "otlp", "console":
				if !slices.Contains(names, n) {
					names = append(names, n)
				}
			default:
				d.Ignored = append(d.Ignored, n)
			}
		}
		if len(names) == 0 {
			d.Why = "OTEL_TRACES_EXPORTER names no supported exporter (otlp, console)"
			return d, nil
		}
		d.Why = "OTEL_TRACES_EXPORTER=" + strings.Join(names, ",")
	} else {
		for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"} {
			if env(k) != "" {
				names = []string{"otlp"}
				d.Why = k + " is set"
				break
			}
		}
		if len(names) == 0 {
			d.Why = "neither OTEL_TRACES_EXPORTER nor an OTLP endpoint is set"
			return d, nil
		}
	}
	for _, n := range names {
		if n == "console" {
			d.Exporters = append(d.Exporters, Console)
			continue
		}
		protocol := env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
		if protocol == "" {
			protocol = env("OTEL_EXPORTER_OTLP_PROTOCOL")
		}
		switch protocol {
		case "", "grpc":
			d.Exporters = append(d.Exporters, OTLPGRPC)
		case "http/protobuf":
			d.Exporters = append(d.Exporters, OTLPHTTP)
		default:
			return Decision{}, fmt.Errorf("tracing: unsupported OTLP protocol %q (grpc or http/protobuf)", protocol)
		}
	}
	return d, nil
}

// Setup installs the global TracerProvider and propagator when the environment
// enables tracing. shutdown flushes and stops the provider (a no-op when tracing is
// off); call it once, at exit, with a bounded context (ShutdownTimeout).
func Setup(ctx context.Context, log *slog.Logger) (shutdown func(context.Context) error, enabled bool, err error) {
	return setup(ctx, log, os.Stdout)
}

// setup is Setup with the console exporter's writer (tests). The exporters and the
// resource read the process environment themselves, so the decision does too.
func setup(ctx context.Context, log *slog.Logger, stdout io.Writer) (func(context.Context) error, bool, error) {
	noop := func(context.Context) error { return nil }
	d, err := Decide(os.Getenv)
	if err != nil {
		return noop, false, err
	}
	if len(d.Ignored) > 0 {
		log.Warn("tracing: ignoring unsupported OTEL_TRACES_EXPORTER entries", "ignored", d.Ignored)
	}
	if !d.Enabled() {
		log.Debug("tracing off", "why", d.Why)
		return noop, false, nil
	}

	res, err := newResource(ctx)
	if err != nil {
		// A partial resource (e.g. a malformed OTEL_RESOURCE_ATTRIBUTES) still has
		// the rest; anything else is fatal.
		if !errors.Is(err, resource.ErrPartialResource) || res == nil {
			return noop, false, fmt.Errorf("tracing: resource: %w", err)
		}
		log.Warn("tracing: partial resource", "error", err)
	}

	// The sampler is left to the SDK: it honours OTEL_TRACES_SAMPLER and
	// OTEL_TRACES_SAMPLER_ARG, defaulting to parentbased_always_on.
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	var exporters []sdktrace.SpanExporter
	for _, e := range d.Exporters {
		exp, err := newExporter(ctx, e, stdout)
		if err != nil {
			for _, x := range exporters {
				_ = x.Shutdown(ctx)
			}
			return noop, false, fmt.Errorf("tracing: %s exporter: %w", e, err)
		}
		exporters = append(exporters, exp)
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	tp := sdktrace.NewTracerProvider(opts...)

	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(Propagator())
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("tracing error", "error", err)
	}))

	service, _ := res.Set().Value("service.name")
	log.Info("tracing on", "why", d.Why, "exporters", d.Exporters, "service_name", service.Emit())
	return tp.Shutdown, true, nil
}

// Propagator is the W3C trace context + baggage propagator.
func Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// newResource: service.name "vidscan-gateway", the SDK's telemetry.sdk.*, then
// OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME (later wins).
func newResource(ctx context.Context) (*resource.Resource, error) {
	return resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", DefaultServiceName)),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(),
	)
}

func newExporter(ctx context.Context, e Exporter, stdout io.Writer) (sdktrace.SpanExporter, error) {
	switch e {
	case OTLPGRPC:
		return otlptracegrpc.New(ctx)
	case OTLPHTTP:
		return otlptracehttp.New(ctx)
	case Console:
		return stdouttrace.New(stdouttrace.WithWriter(stdout))
	}
	return nil, fmt.Errorf("unknown exporter %q", e)
}

// ClientStatsHandler is the stats handler for the upstream ClientConn
// (grpc.WithStatsHandler): a client span per RPC, a child of the request's span, with
// its context sent as `traceparent` (and `baggage`) metadata. Health checks (the
// untraced /healthz) get no span.
func ClientStatsHandler() stats.Handler {
	return otelgrpc.NewClientHandler(otelgrpc.WithFilter(func(info *stats.RPCTagInfo) bool {
		return !strings.HasPrefix(info.FullMethodName, "/grpc.health.v1.Health/")
	}))
}
