// Package upload serves POST /v1/dashboard/upload/{session_id}: a multipart/form-data
// body streamed into the UploadVideo client stream as it arrives.
//
// The form: text fields (filename, content_type, metadata, model, sha256, size,
// write_offset, callback_url; unknown fields are ignored) and ONE part named "file", read in order.
// The fields before the file make the UploadHeader, sent when the file part starts;
// the file is streamed as it arrives, never buffered. filename, content_type and
// metadata may also follow the file (as many form builders send them): they are
// collected and sent in the UploadTrailer of the last message. Any other part after
// the file (model, sha256, size, write_offset, callback_url, an unknown field, a
// second file), or a
// field given on both sides, answers 400 INVALID_FIELD and the stream is cancelled
// without being committed: finish_write is sent (and the stream half-closed) only
// after the closing boundary of the form has been read.
//
// Memory: one chunk buffer per upload (ChunkBytes) plus gRPC's flow-control window,
// and the text fields, each at most MaxFieldBytes and each at most once; nothing is
// written to disk. Sizes: the body is capped at MaxUploadBytes +
// MultipartSlack (http.MaxBytesReader) and the file bytes at MaxUploadBytes; either
// answers 413 FILE_TOO_LARGE. A client that goes away cancels the gRPC stream through
// the request context, so the server aborts and cleans up.
package upload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	vidscanv1 "github.com/vidscan/vidscan/gateway/gen/vidscan/v1"
	"github.com/vidscan/vidscan/gateway/internal/apierr"
)

// Pattern is the route, registered with runtime.ServeMux.HandlePath.
const Pattern = "/v1/dashboard/upload/{session_id}"

// Config bounds one upload.
type Config struct {
	MaxUploadBytes  int64         // largest file accepted; must equal the server's VIDSCAN_MAX_UPLOAD_BYTES
	MultipartSlack  int64         // body bytes allowed on top of MaxUploadBytes (boundaries, part headers, fields)
	ChunkBytes      int           // bytes per UploadVideoRequest.chunk
	MaxFieldBytes   int64         // longest text field
	IdleTimeout     time.Duration // longest wait for the next body bytes; 0 disables
	ErrorDrainBytes int64         // body bytes read and discarded before answering an early error
}

// Handler is the upload route.
type Handler struct {
	cfg    Config
	mux    *runtime.ServeMux
	client vidscanv1.UploadServiceClient
	log    *slog.Logger
	bufs   sync.Pool
}

// NewHandler returns the route; mux supplies the header-to-metadata mapping of the
// generated routes (runtime.AnnotateContext).
func NewHandler(cfg Config, mux *runtime.ServeMux, client vidscanv1.UploadServiceClient, log *slog.Logger) *Handler {
	h := &Handler{cfg: cfg, mux: mux, client: client, log: log}
	h.bufs.New = func() any { b := make([]byte, cfg.ChunkBytes); return &b }
	return h
}

// ServeHTTP has the runtime.HandlerFunc signature.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, params map[string]string) {
	u := &upload{h: h, w: w, r: r, rc: http.NewResponseController(w), started: time.Now()}
	defer u.cancel()
	u.run(params["session_id"])
}

type upload struct {
	h       *Handler
	w       http.ResponseWriter
	r       *http.Request
	rc      *http.ResponseController
	started time.Time

	stream     grpc.ClientStreamingClient[vidscanv1.UploadVideoRequest, vidscanv1.UploadVideoResponse]
	stopStream context.CancelFunc
	fileBytes  int64
}

func (u *upload) cancel() {
	if u.stopStream != nil {
		u.stopStream()
	}
}

func (u *upload) run(sessionID string) {
	cfg := u.h.cfg
	if sessionID == "" {
		u.formError(&FormError{HTTPStatus: http.StatusBadRequest, Code: codes.InvalidArgument,
			Reason: vidscanv1.ErrorReason_INVALID_FIELD, Field: "session_id", Message: "session_id: is required"}, false)
		return
	}
	mediaType, params, err := mime.ParseMediaType(u.r.Header.Get("Content-Type"))
	if err != nil || mediaType != "multipart/form-data" {
		u.formError(&FormError{HTTPStatus: http.StatusUnsupportedMediaType, Code: codes.InvalidArgument,
			Reason: vidscanv1.ErrorReason_UNSUPPORTED_MEDIA_TYPE, Message: "the upload body must be multipart/form-data"}, false)
		return
	}
	if params["boundary"] == "" {
		u.formError(&FormError{HTTPStatus: http.StatusBadRequest, Code: codes.InvalidArgument,
			Reason: vidscanv1.ErrorReason_MALFORMED_MULTIPART, Message: "the multipart/form-data Content-Type has no boundary"}, false)
		return
	}
	limit := cfg.MaxUploadBytes + cfg.MultipartSlack
	if u.r.ContentLength > limit {
		u.formError(TooLarge(cfg.MaxUploadBytes, fmt.Sprintf("the request body (%d bytes)", u.r.ContentLength)), false)
		return
	}
	u.r.Body = http.MaxBytesReader(u.w, u.r.Body, limit)
	mr, err := u.r.MultipartReader()
	if err != nil {
		u.bodyError(err)
		return
	}

	var fields Fields
	fileSeen := false
	for {
		u.extendDeadline()
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			u.bodyError(err)
			return
		}
		name := part.FormName()
		switch {
		case fileSeen && !IsLateField(name):
			u.formError(FieldAfterFile(name), true)
			return
		case name == FieldFile:
			fileSeen = true
			hdr, ferr := fields.Header(sessionID, part.FileName(), part.Header.Get("Content-Type"), cfg.MaxUploadBytes)
			if ferr != nil {
				u.formError(ferr, true)
				return
			}
			if !u.open(hdr) || !u.forward(part) {
				return
			}
		case IsKnownField(name):
			value, err := io.ReadAll(io.LimitReader(part, cfg.MaxFieldBytes+1))
			if err != nil {
				u.bodyError(err)
				return
			}
			if int64(len(value)) > cfg.MaxFieldBytes {
				u.formError(FieldTooLarge(name, cfg.MaxFieldBytes), true)
				return
			}
			set := fields.Set
			if fileSeen {
				set = fields.SetLate
			}
			if ferr := set(name, string(value)); ferr != nil {
				u.formError(ferr, true)
				return
			}
		default:
			// Unknown fields are ignored; NextPart skips their bytes.
		}
		_ = part.Close()
	}
	if !fileSeen {
		u.formError(MissingFile(), true)
		return
	}
	trailer, ferr := fields.Trailer()
	if ferr != nil {
		u.formError(ferr, true)
		return
	}
	// The form is complete. Read the epilogue so that the server notices a client
	// that goes away while the analysis runs (that cancels the request context), and
	// stop the idle deadline: the wait below is for the server, not the client.
	_, _ = io.Copy(io.Discard, io.LimitReader(u.r.Body, 64<<10))
	u.clearDeadline()

	// Only now, with the whole form read and valid, is the file complete: finish_write
	// (ByteStream-style) tells the server so. Every failure path above cancels the
	// stream instead, and a stream that ends without finish_write is never accepted.
	if !u.send(&vidscanv1.UploadVideoRequest{FinishWrite: true, Trailer: trailer}) {
		return
	}
	resp, err := u.stream.CloseAndRecv()
	if err != nil {
		u.upstreamError(err)
		return
	}
	body, err := RenderResult(resp.GetResult())
	if err != nil {
		u.write(0, status.New(codes.Internal, "failed to render the upload result: "+err.Error()))
		return
	}
	hdr := u.w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Content-Length", strconv.Itoa(len(body)))
	if id := resp.GetResult().GetVideoId(); id != "" {
		hdr.Set("Location", "/v1/videos/"+id)
	}
	u.w.WriteHeader(http.StatusCreated)
	_, _ = u.w.Write(body)
	u.h.log.Info("upload stored", "session_id", sessionID, "bytes", u.fileBytes,
		"video_id", resp.GetResult().GetVideoId(), "upload_status", UploadStatusString(resp.GetResult().GetUploadStatus()),
		"duration", time.Since(u.started).Round(time.Millisecond), "request_id", u.r.Header.Get("X-Request-Id"))
}

// open starts the UploadVideo stream (metadata as for the generated routes:
// authorization, x-request-id, x-forwarded-*, grpc-timeout) and sends the header.
func (u *upload) open(hdr *vidscanv1.UploadHeader) bool {
	ctx, err := runtime.AnnotateContext(u.r.Context(), u.h.mux, u.r,
		vidscanv1.UploadService_UploadVideo_FullMethodName, runtime.WithHTTPPathPattern(Pattern))
	if err != nil {
		u.upstreamError(err)
		return false
	}
	ctx, u.stopStream = context.WithCancel(ctx)
	stream, err := u.h.client.UploadVideo(ctx)
	if err != nil {
		u.upstreamError(err)
		return false
	}
	u.stream = stream
	return u.send(&vidscanv1.UploadVideoRequest{Payload: &vidscanv1.UploadVideoRequest_Header{Header: hdr}})
}

// forward copies the file part into the stream, ChunkBytes at a time.
func (u *upload) forward(part io.Reader) bool {
	bp := u.h.bufs.Get().(*[]byte)
	defer u.h.bufs.Put(bp)
	buf := *bp
	for {
		u.extendDeadline()
		n, err := fill(part, buf)
		if err != nil && !errors.Is(err, io.EOF) {
			// A failed read fails the upload, so the bytes it returned with the error
			// are not forwarded. Sending them first would race: net/http cancels the
			// request context (and with it the stream) when a connection read fails,
			// so an idle timeout would surface as the stream's CANCELLED (499)
			// instead of 408 UPLOAD_IDLE_TIMEOUT.
			u.bodyError(err)
			return false
		}
		if n > 0 {
			u.fileBytes += int64(n)
			if u.fileBytes > u.h.cfg.MaxUploadBytes {
				u.formError(TooLarge(u.h.cfg.MaxUploadBytes, "the file"), true)
				return false
			}
			// SendMsg has serialized the message when it returns, so buf is reusable.
			if !u.send(&vidscanv1.UploadVideoRequest{Payload: &vidscanv1.UploadVideoRequest_Chunk{Chunk: buf[:n]}}) {
				return false
			}
		}
		if errors.Is(err, io.EOF) {
			return true
		}
	}
}

// fill reads until buf is full or r fails; unlike io.ReadFull it reports r's own error
// (io.EOF at the end of the part, io.ErrUnexpectedEOF for a truncated body).
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (u *upload) send(msg *vidscanv1.UploadVideoRequest) bool {
	err := u.stream.Send(msg)
	if err == nil {
		return true
	}
	if errors.Is(err, io.EOF) {
		// The server ended the stream; its status comes from RecvMsg.
		if _, err = u.stream.CloseAndRecv(); err == nil {
			err = status.Error(codes.Internal, "the server ended the upload before the file was sent")
		}
	}
	u.upstreamError(err)
	return false
}

// upstreamError answers a gRPC failure. Any unread body is drained first (bounded),
// so that a client still sending sees the answer instead of a reset connection.
func (u *upload) upstreamError(err error) {
	st := status.Convert(err)
	if u.r.Context().Err() != nil {
		u.h.log.Info("upload abandoned by the client", "bytes", u.fileBytes, "request_id", u.r.Header.Get("X-Request-Id"))
	}
	u.cancel()
	u.drain()
	u.write(0, st)
}

// formError answers a problem the gateway found itself; the stream (if open) is
// cancelled so that the server releases the session.
func (u *upload) formError(e *FormError, drain bool) {
	u.cancel()
	if drain {
		u.drain()
	}
	u.write(e.HTTPStatus, apierr.New(e.Code, e.Reason, e.Field, e.Message, e.Metadata))
}

// bodyError answers a failure to read the request body.
func (u *upload) bodyError(err error) {
	u.cancel()
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		// net/http closes the connection after this response.
		u.formError(TooLarge(u.h.cfg.MaxUploadBytes, "the request body"), false)
	case errors.Is(err, os.ErrDeadlineExceeded):
		u.formError(&FormError{HTTPStatus: http.StatusRequestTimeout, Code: codes.DeadlineExceeded,
			Reason:  vidscanv1.ErrorReason_UPLOAD_IDLE_TIMEOUT,
			Message: fmt.Sprintf("no upload bytes arrived for %s", u.h.cfg.IdleTimeout)}, false)
	case u.r.Context().Err() != nil || errors.Is(err, io.ErrUnexpectedEOF):
		u.h.log.Info("upload body ended early (client gone?)", "bytes", u.fileBytes, "error", err,
			"request_id", u.r.Header.Get("X-Request-Id"))
		u.formError(&FormError{HTTPStatus: http.StatusBadRequest, Code: codes.InvalidArgument,
			Reason: vidscanv1.ErrorReason_MALFORMED_MULTIPART, Message: "the request body ended before the multipart form was complete"}, false)
	default:
		u.formError(&FormError{HTTPStatus: http.StatusBadRequest, Code: codes.InvalidArgument,
			Reason: vidscanv1.ErrorReason_MALFORMED_MULTIPART, Message: "malformed multipart/form-data body: " + err.Error()}, false)
	}
}

// drain reads and discards what is left of the body, at most ErrorDrainBytes.
func (u *upload) drain() {
	if u.h.cfg.ErrorDrainBytes <= 0 || u.r.Context().Err() != nil {
		return
	}
	u.extendDeadline()
	_, _ = io.Copy(io.Discard, io.LimitReader(u.r.Body, u.h.cfg.ErrorDrainBytes))
	u.clearDeadline()
}

func (u *upload) write(httpStatus int, st *status.Status) {
	if st.Code() != codes.Canceled || u.r.Context().Err() == nil {
		u.h.log.Info("upload failed", "status", st.Code().String(), "reason", apierr.Reason(st),
			"message", st.Message(), "bytes", u.fileBytes, "request_id", u.r.Header.Get("X-Request-Id"))
	}
	apierr.Write(u.w, httpStatus, st)
}

func (u *upload) extendDeadline() {
	if d := u.h.cfg.IdleTimeout; d > 0 {
		_ = u.rc.SetReadDeadline(time.Now().Add(d))
	}
}

func (u *upload) clearDeadline() {
	if u.h.cfg.IdleTimeout > 0 {
		_ = u.rc.SetReadDeadline(time.Time{})
	}
}
