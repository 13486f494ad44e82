// Package content serves GET (and HEAD) /v1/videos/{video_id}/content: the bytes of
// a stored video through ContentService.ReadVideoContent, with HTTP range requests
// (RFC 9110 14), so a browser's <video> element can play and seek it.
//
// Auth is the caller's token (Authorization) or the signed query parameters the
// server puts in a video's s3_url for the embedded store (user, expires, signature),
// since a <video src> sends no headers. One range per request: a multi-range request
// gets the whole file (200), as RFC 9110 allows. Memory: one gRPC message at a time.
package content

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	vidscanv1 "github.com/vidscan/vidscan/gateway/gen/vidscan/v1"
	"github.com/vidscan/vidscan/gateway/internal/apierr"
)

// Pattern is the route, registered with runtime.ServeMux.HandlePath for GET and HEAD.
const Pattern = "/v1/videos/{video_id}/content"

// Handler is the content route.
type Handler struct {
	mux    *runtime.ServeMux
	client vidscanv1.ContentServiceClient
	log    *slog.Logger
}

// NewHandler returns the route; mux supplies the header-to-metadata mapping.
func NewHandler(mux *runtime.ServeMux, client vidscanv1.ContentServiceClient, log *slog.Logger) *Handler {
	return &Handler{mux: mux, client: client, log: log}
}

// Range is one parsed "bytes=" range: Suffix > 0 means the last Suffix bytes; else
// [Start, End] with End < 0 for "to the end".
type Range struct {
	Start, End, Suffix int64
}

// ParseRange reads a Range header. ok is false when there is none or it is not one
// satisfiable-looking byte range (then the whole file is served); err is set for a
// syntactically valid range that can never be satisfied (e.g. "bytes=-0").
func ParseRange(header string) (r Range, ok bool, err error) {
	spec, found := strings.CutPrefix(strings.TrimSpace(header), "bytes=")
	if !found || strings.Contains(spec, ",") {
		return Range{}, false, nil
	}
	first, last, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return Range{}, false, nil
	}
	if first == "" {
		n, perr := strconv.ParseInt(last, 10, 64)
		if perr != nil || n < 0 {
			return Range{}, false, nil
		}
		if n == 0 {
			return Range{}, false, errors.New("an empty suffix range")
		}
		return Range{Suffix: n}, true, nil
	}
	start, perr := strconv.ParseInt(first, 10, 64)
	if perr != nil || start < 0 {
		return Range{}, false, nil
	}
	end := int64(-1)
	if last != "" {
		end, perr = strconv.ParseInt(last, 10, 64)
		if perr != nil || end < start {
			return Range{}, false, nil
		}
	}
	return Range{Start: start, End: end}, true, nil
}

// ServeHTTP has the runtime.HandlerFunc signature.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, params map[string]string) {
	req := &vidscanv1.ReadVideoContentRequest{VideoId: params["video_id"]}
	q := r.URL.Query()
	if sig := q.Get("signature"); sig != "" {
		expires, err := strconv.ParseInt(q.Get("expires"), 10, 64)
		if err != nil {
			apierr.Errorf(w, http.StatusUnauthorized, codes.Unauthenticated, vidscanv1.ErrorReason_UNAUTHENTICATED, "", "the content link's expires parameter is malformed")
			return
		}
		req.UserId, req.Expires, req.Signature = q.Get("user"), expires, sig
	}
	rng, partial, err := ParseRange(r.Header.Get("Range"))
	if err != nil {
		apierr.Errorf(w, http.StatusRequestedRangeNotSatisfiable, codes.OutOfRange, vidscanv1.ErrorReason_RANGE_NOT_SATISFIABLE, "", "the requested range is empty")
		return
	}
	if partial {
		if rng.Suffix > 0 {
			req.SuffixLength = &rng.Suffix
		} else {
			req.Offset = rng.Start
			if rng.End >= 0 {
				length := rng.End - rng.Start + 1
				req.Length = &length
			}
		}
	}
	if r.Method == http.MethodHead && !partial {
		one := int64(1) // the info message is enough; no body is sent
		req.Length = &one
	}
	ctx, err := runtime.AnnotateContext(r.Context(), h.mux, r,
		vidscanv1.ContentService_ReadVideoContent_FullMethodName, runtime.WithHTTPPathPattern(Pattern))
	if err != nil {
		apierr.Write(w, 0, status.Convert(err))
		return
	}
	stream, err := h.client.ReadVideoContent(ctx, req)
	if err != nil {
		apierr.Write(w, 0, status.Convert(err))
		return
	}
	first, err := stream.Recv()
	if err != nil {
		apierr.Write(w, 0, status.Convert(err))
		return
	}
	info := first.GetInfo()
	if info == nil {
		apierr.Write(w, 0, status.New(codes.Internal, "the content stream did not start with its info"))
		return
	}
	hdr := w.Header()
	hdr.Set("Accept-Ranges", "bytes")
	hdr.Set("Content-Type", info.GetContentType())
	hdr.Set("ETag", strconv.Quote(info.GetSha256()))
	hdr.Set("Cache-Control", "private, max-age=3600")
	code := http.StatusOK
	length := info.GetLength()
	if r.Method == http.MethodHead && !partial {
		length = info.GetTotalSize()
	}
	if partial {
		code = http.StatusPartialContent
		hdr.Set("Content-Range", "bytes "+strconv.FormatInt(info.GetOffset(), 10)+"-"+
			strconv.FormatInt(info.GetOffset()+info.GetLength()-1, 10)+"/"+strconv.FormatInt(info.GetTotalSize(), 10))
	}
	hdr.Set("Content-Length", strconv.FormatInt(length, 10))
	w.WriteHeader(code)
	if r.Method == http.MethodHead {
		return
	}
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil { // headers are out: all we can do is cut the body short
			h.log.Warn("content stream failed mid-body", "video_id", req.GetVideoId(), "error", err)
			return
		}
		if _, err := w.Write(msg.GetData()); err != nil {
			return // the client went away; the request context cancels the stream
		}
	}
}
