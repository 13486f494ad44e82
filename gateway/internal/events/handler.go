// Package events serves GET /v1/analyses/{analysis_id}/events: AnalysisService.WatchAnalysis
// as Server-Sent Events (text/event-stream), for browsers (EventSource) and any HTTP
// client that would otherwise poll GET /v1/analyses/{analysis_id}.
//
// Each stream message is one `event: analysis` whose data is the Analysis as JSON,
// marshaled by the mux's outgoing marshaler so it has the shape of every other route
// (proto field names), with an increasing `id:`. A `: keepalive` comment goes out
// every KeepaliveInterval. The response ends when the stream does (after a final
// state). An error before the first event is the usual JSON error body with its HTTP
// status; after it (headers are out) it is an `event: error` whose data is that body.
// The client going away cancels the request context and with it the gRPC stream.
package events

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	vidscanv1 "github.com/vidscan/vidscan/gateway/gen/vidscan/v1"
	"github.com/vidscan/vidscan/gateway/internal/apierr"
)

// Pattern is the route, registered with runtime.ServeMux.HandlePath for GET.
const Pattern = "/v1/analyses/{analysis_id}/events"

// KeepaliveInterval is how often a comment goes out while no event does.
const KeepaliveInterval = 15 * time.Second

// Watcher is the one call of AnalysisServiceClient the route uses.
type Watcher interface {
	WatchAnalysis(ctx context.Context, in *vidscanv1.WatchAnalysisRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[vidscanv1.WatchAnalysisResponse], error)
}

// Handler is the events route.
type Handler struct {
	mux       *runtime.ServeMux
	client    Watcher
	log       *slog.Logger
	keepalive time.Duration
}

// NewHandler returns the route; mux supplies the header-to-metadata mapping and the
// outgoing JSON marshaler.
func NewHandler(mux *runtime.ServeMux, client Watcher, log *slog.Logger) *Handler {
	return &Handler{mux: mux, client: client, log: log, keepalive: KeepaliveInterval}
}

type received struct {
	msg *vidscanv1.WatchAnalysisResponse
	err error
}

// ServeHTTP has the runtime.HandlerFunc signature.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, params map[string]string) {
	// base ends when the client goes away or this handler returns (which ends the
	// gRPC stream); ctx may also carry a deadline (Grpc-Timeout), which ends the
	// stream with DEADLINE_EXCEEDED, reported to the client as an error event.
	base, cancel := context.WithCancel(r.Context())
	defer cancel()
	ctx, err := runtime.AnnotateContext(base, h.mux, r,
		vidscanv1.AnalysisService_WatchAnalysis_FullMethodName, runtime.WithHTTPPathPattern(Pattern))
	if err != nil {
		apierr.Write(w, 0, status.Convert(err))
		return
	}
	stream, err := h.client.WatchAnalysis(ctx, &vidscanv1.WatchAnalysisRequest{AnalysisId: params["analysis_id"]})
	if err != nil {
		apierr.Write(w, 0, status.Convert(err))
		return
	}
	first, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		err = status.Error(codes.Internal, "the analysis stream ended without a message")
	}
	if err != nil {
		apierr.Write(w, 0, status.Convert(err))
		return
	}
	_, outbound := runtime.MarshalerForRequest(h.mux, r)

	rc := http.NewResponseController(w)
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	sse := NewWriter(w, func() error {
		if err := rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return err
		}
		return nil
	})

	// Recv blocks: it runs in its own goroutine, which ends when the stream does
	// (cancel() above makes Recv return once this handler is done).
	messages := make(chan received)
	go func() {
		for {
			msg, err := stream.Recv()
			select {
			case messages <- received{msg, err}:
			case <-base.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()

	ticker := time.NewTicker(h.keepalive)
	defer ticker.Stop()
	next := received{msg: first}
	for {
		if next.err != nil {
			if !errors.Is(next.err, io.EOF) && base.Err() == nil {
				h.writeError(sse, status.Convert(next.err))
			}
			return
		}
		if next.msg != nil {
			if err := h.writeAnalysis(sse, outbound, next.msg); err != nil {
				return // the client went away; cancel() ends the stream
			}
			ticker.Reset(h.keepalive)
		}
		select {
		case next = <-messages:
		case <-ticker.C:
			if err := sse.Comment("keepalive"); err != nil {
				return
			}
			next = received{}
		case <-base.Done():
			return
		}
	}
}

func (h *Handler) writeAnalysis(sse *Writer, m runtime.Marshaler, msg *vidscanv1.WatchAnalysisResponse) error {
	data, err := m.Marshal(msg.GetAnalysis())
	if err != nil {
		h.log.Error("cannot marshal an analysis event", "error", err)
		h.writeError(sse, status.New(codes.Internal, "cannot marshal the analysis"))
		return err
	}
	return sse.Event("analysis", data)
}

// writeError sends st as the last event, with the error body the other routes answer.
func (h *Handler) writeError(sse *Writer, st *status.Status) {
	data, err := json.Marshal(apierr.BuildBody(st, time.Now()))
	if err != nil {
		return
	}
	_ = sse.Event("error", data)
}
