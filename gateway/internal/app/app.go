// Package app wires the gateway's HTTP handler: the grpc-gateway ServeMux with the
// generated routes, the streaming upload route, tus at /v1/tus/, the upload page at /,
// /healthz, /openapi.json and the middleware (access log, X-Request-Id, CORS, metrics,
// tracing).
package app

import (
	"context"
	"log/slog"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/vidscan/vidscan/gateway"
	vidscanv1 "github.com/vidscan/vidscan/gateway/gen/vidscan/v1"
	"github.com/vidscan/vidscan/gateway/internal/apierr"
	"github.com/vidscan/vidscan/gateway/internal/content"
	"github.com/vidscan/vidscan/gateway/internal/events"
	"github.com/vidscan/vidscan/gateway/internal/httpmw"
	"github.com/vidscan/vidscan/gateway/internal/openapi"
	"github.com/vidscan/vidscan/gateway/internal/page"
	"github.com/vidscan/vidscan/gateway/internal/restjson"
	"github.com/vidscan/vidscan/gateway/internal/tus"
	"github.com/vidscan/vidscan/gateway/internal/upload"
)

// Config is what the handler needs besides the upstream connection.
type Config struct {
	Upload      upload.Config
	Tus         tus.Config // the tus endpoint at /v1/tus/; ChunkBytes 0: off
	CORSOrigins string     // comma-separated origins, "*" for any, "" for none
	AccessLog   bool
	Metrics     *httpmw.Metrics // nil: no HTTP metrics
	// Tracing gives every request but /healthz an OpenTelemetry server span (global
	// TracerProvider and propagator, see internal/tracing). The upstream conn needs
	// tracing.ClientStatsHandler for the gRPC client spans and traceparent metadata.
	Tracing bool
}

// New returns the gateway's handler. conn is the upstream gRPC connection.
func New(cfg Config, conn grpc.ClientConnInterface, log *slog.Logger) (http.Handler, error) {
	var extra []runtime.ServeMuxOption
	if cfg.Metrics != nil {
		extra = append(extra, runtime.WithMiddlewares(cfg.Metrics.Route()))
	}
	if cfg.Tracing {
		extra = append(extra, runtime.WithMiddlewares(httpmw.TraceRoute()))
	}
	mux := NewServeMux(conn, extra...)

	// ServeMux tries the most recently registered pattern first, so the upload route
	// (POST /v1/dashboard/upload/{session_id}) goes in BEFORE the generated routes:
	// POST /v1/dashboard/upload/sessions must reach CreateUploadSession.
	up := upload.NewHandler(cfg.Upload, mux, vidscanv1.NewUploadServiceClient(conn), log)
	if err := mux.HandlePath(http.MethodPost, upload.Pattern, up.ServeHTTP); err != nil {
		return nil, err
	}
	ctx := context.Background()
	if err := vidscanv1.RegisterUploadServiceHandlerClient(ctx, mux, vidscanv1.NewUploadServiceClient(conn)); err != nil {
		return nil, err
	}
	if err := vidscanv1.RegisterAnalysisServiceHandlerClient(ctx, mux, vidscanv1.NewAnalysisServiceClient(conn)); err != nil {
		return nil, err
	}
	// GET/HEAD /v1/videos/{video_id}/content: the bytes, with HTTP ranges (playable).
	videoContent := content.NewHandler(mux, vidscanv1.NewContentServiceClient(conn), log)
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		if err := mux.HandlePath(method, content.Pattern, videoContent.ServeHTTP); err != nil {
			return nil, err
		}
	}
	// GET /v1/analyses/{analysis_id}/events: WatchAnalysis as Server-Sent Events.
	analysisEvents := events.NewHandler(mux, vidscanv1.NewAnalysisServiceClient(conn), log)
	if err := mux.HandlePath(http.MethodGet, events.Pattern, analysisEvents.ServeHTTP); err != nil {
		return nil, err
	}

	doc, err := openapi.Patch(gateway.OpenAPIv2, cfg.Upload.MaxUploadBytes)
	if err != nil {
		return nil, err
	}
	if err := mux.HandlePath(http.MethodGet, "/openapi.json", func(w http.ResponseWriter, _ *http.Request, _ map[string]string) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(doc)))
		_, _ = w.Write(doc)
	}); err != nil {
		return nil, err
	}

	uploadPage, err := page.New()
	if err != nil {
		return nil, err
	}
	var resumable http.Handler
	if cfg.Tus.ChunkBytes > 0 {
		if resumable, err = tus.New(cfg.Tus, mux, vidscanv1.NewUploadServiceClient(conn), log); err != nil {
			return nil, err
		}
	}
	var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case resumable != nil && tus.Matches(r.URL.Path):
			resumable.ServeHTTP(w, r)
		case page.Matches(r.URL.Path):
			uploadPage.ServeHTTP(w, r)
		default:
			mux.ServeHTTP(w, r)
		}
	})
	h = httpmw.NewCORS(cfg.CORSOrigins).Wrap(h)
	h = httpmw.RequestID(h)
	if cfg.AccessLog {
		h = httpmw.AccessLog(log, h)
	}
	if cfg.Metrics != nil {
		h = cfg.Metrics.Wrap(h)
	}
	if cfg.Tracing {
		h = httpmw.Trace(h) // outermost: the span covers the whole request
	}
	return h, nil
}

// NewServeMux is the grpc-gateway mux with the gateway's options (no routes but /healthz).
func NewServeMux(conn grpc.ClientConnInterface, extra ...runtime.ServeMuxOption) *runtime.ServeMux {
	options := []runtime.ServeMuxOption{
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.HTTPBodyMarshaler{
			// Responses in the REST shape (internal/restjson); requests read by protojson.
			Marshaler: &restjson.Marshaler{JSONPb: runtime.JSONPb{
				MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true},
				UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: true},
			}},
		}),
		runtime.SetQueryParameterParser(&restjson.QueryParser{}),
		runtime.WithErrorHandler(apierr.Handler),
		runtime.WithRoutingErrorHandler(apierr.RoutingHandler),
		runtime.WithIncomingHeaderMatcher(HeaderMatcher),
		runtime.WithOutgoingHeaderMatcher(OutgoingHeaderMatcher),
		runtime.WithForwardResponseOption(StatusCodes),
		// GET /healthz[?service=NAME]: grpc.health.v1.Health/Check on the upstream;
		// 200 {"status":"SERVING"}, else 503 (404 for an unknown service).
		runtime.WithHealthzEndpoint(grpc_health_v1.NewHealthClient(conn)),
		runtime.WithDisablePathLengthFallback(),
		runtime.WithWriteContentLength(),
	}
	return runtime.NewServeMux(append(options, extra...)...)
}

// HeaderMatcher forwards X-Request-Id as `x-request-id` metadata, plus grpc-gateway's
// defaults (Authorization as `authorization`; permanent HTTP headers as grpcgateway-*).
func HeaderMatcher(key string) (string, bool) {
	if textproto.CanonicalMIMEHeaderKey(key) == httpmw.RequestIDHeader {
		return "x-request-id", true
	}
	return runtime.DefaultHeaderMatcher(key)
}

// OutgoingHeaderMatcher passes the server's header metadata on as Grpc-Metadata-<key>
// (grpc-gateway's default), except the transport's own content-type and grpc-* keys.
func OutgoingHeaderMatcher(key string) (string, bool) {
	k := strings.ToLower(key)
	if k == "content-type" || strings.HasPrefix(k, "grpc-") {
		return "", false
	}
	return runtime.MetadataHeaderPrefix + key, true
}

// StatusCodes sets the non-200 success statuses of the generated routes:
// DELETE /v1/dashboard/upload/{session_id} answers 204 No Content (the response body
// is dropped). The upload route writes its 201 itself.
func StatusCodes(_ context.Context, w http.ResponseWriter, m proto.Message) error {
	if _, ok := m.(*vidscanv1.CancelUploadSessionResponse); ok {
		w.Header().Del("Content-Type")
		w.Header().Del("Content-Length")
		w.WriteHeader(http.StatusNoContent)
	}
	return nil
}
