// Package tus serves the tus 1.0 resumable-upload protocol (https://tus.io) at
// /v1/tus/ on vidscan's own upload sessions, with tusd's pkg/handler doing the
// protocol and a data store (store.go) that writes into UploadVideo streams.
//
//   - creation (POST /v1/tus/, also with an upload body): CreateUploadSession with
//     expected_size = Upload-Length and an UploadIntent from Upload-Metadata
//     (filename|name, filetype|content_type|type, model, metadata as a JSON object,
//     sha256, callback_url), all checked at once by the server. The upload id is the
//     session id: the same session is visible over gRPC and REST.
//   - HEAD: Upload-Offset is the session's committed_bytes, so any gateway replica
//     (and any server replica) answers the same; Upload-Length is the declared size.
//   - PATCH: one UploadVideo stream from the offset. The last byte sends finish_write
//     and waits for the server's result; a body that ends early (a dropped
//     connection) leaves what arrived committed, and the client resumes from there.
//     The final 204 carries Vidscan-Video-Id, Vidscan-Analysis-Id and Vidscan-Result
//     (GET it for the UploadResult JSON).
//   - termination (DELETE): CancelUploadSession.
//   - checksum (Upload-Checksum: sha256 <base64>): the body is verified before any of
//     it is sent on (so at most ChecksumMaxBytes per PATCH); 460 on a mismatch.
//
// Refusals from the server (quota, format, size, hash, limits) are answered with the
// REST API's JSON error body and HTTP status; tusd's own protocol errors (an offset
// that does not match: 409, a missing Tus-Resumable: 412) keep tusd's plain text.
package tus

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/tus/tusd/v2/pkg/handler"
	xslog "golang.org/x/exp/slog"
	"google.golang.org/grpc/codes"

	vidscanv1 "github.com/vidscan/vidscan/gateway/gen/vidscan/v1"
	"github.com/vidscan/vidscan/gateway/internal/apierr"
)

// BasePath is where the tus endpoint lives.
const BasePath = "/v1/tus/"

// ResultPath is the GET route of a session's UploadResult (GetUploadResult).
func ResultPath(sessionID string) string {
	return "/v1/dashboard/upload/" + sessionID + "/result"
}

// Config bounds the tus endpoint.
type Config struct {
	MaxUploadBytes   int64         // advertised as Tus-Max-Size; the server enforces it
	ChunkBytes       int           // bytes per UploadVideoRequest.chunk
	ChecksumMaxBytes int64         // largest PATCH body with Upload-Checksum (held in memory)
	IdleTimeout      time.Duration // longest wait for the next body bytes (tusd's NetworkTimeout)
	ErrorDrainBytes  int64         // body bytes read and discarded before answering a refusal
}

// Matches reports whether the tus endpoint serves path.
func Matches(path string) bool {
	return path == strings.TrimSuffix(BasePath, "/") || strings.HasPrefix(path, BasePath)
}

type methodKey struct{}

func requestMethod(ctx context.Context) string {
	m, _ := ctx.Value(methodKey{}).(string)
	return m
}

// New returns the tus handler; mux supplies the header-to-metadata mapping of the
// generated routes (Authorization, X-Request-Id), as for the REST upload route.
func New(cfg Config, mux *runtime.ServeMux, client vidscanv1.UploadServiceClient, log *slog.Logger) (http.Handler, error) {
	s := newStore(client, cfg)
	composer := handler.NewStoreComposer()
	composer.UseCore(s)
	composer.UseTerminater(s)
	idle := cfg.IdleTimeout
	if idle <= 0 {
		idle = 60 * time.Second
	}
	h, err := handler.NewHandler(handler.Config{
		BasePath:      BasePath,
		StoreComposer: composer,
		// No MaxSize: the server refuses a too large Upload-Length itself
		// (FILE_TOO_LARGE, 413, with the JSON body); Tus-Max-Size is added below.
		DisableDownload:                  true,
		DisableConcatenation:             true,
		Cors:                             &handler.CorsConfig{Disable: true}, // the gateway's CORS middleware
		NetworkTimeout:                   idle,
		GracefulRequestCompletionTimeout: 15 * time.Second,
		// tusd logs every request at Info; its warnings and errors go to stderr as JSON
		// like the gateway's own lines (the access log covers the requests).
		Logger:                    xslog.New(xslog.NewJSONHandler(os.Stderr, &xslog.HandlerOptions{Level: xslog.LevelWarn})).With("component", "tus"),
		PreFinishResponseCallback: resultHeaders(client, log),
	})
	if err != nil {
		return nil, err
	}
	routed := http.StripPrefix(strings.TrimSuffix(BasePath, "/"), h)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, err := runtime.AnnotateContext(r.Context(), mux, r, vidscanv1.UploadService_UploadVideo_FullMethodName,
			runtime.WithHTTPPathPattern(BasePath+"{session_id}"))
		if err != nil {
			apierr.Errorf(w, http.StatusBadRequest, codes.InvalidArgument, vidscanv1.ErrorReason_BAD_REQUEST, "", err.Error())
			return
		}
		method := r.Method
		if o := r.Header.Get("X-HTTP-Method-Override"); method == http.MethodPost && o != "" {
			method = o
		}
		r = r.WithContext(context.WithValue(ctx, methodKey{}, method))
		if method == http.MethodPatch && r.Header.Get("Upload-Checksum") != "" {
			if !verifyChecksum(w, r, cfg.ChecksumMaxBytes, idle) {
				return
			}
		}
		routed.ServeHTTP(&advertising{ResponseWriter: w, maxSize: cfg.MaxUploadBytes}, r)
	}), nil
}

// resultHeaders links the final PATCH's 204 to the UploadResult.
func resultHeaders(client vidscanv1.UploadServiceClient, log *slog.Logger) func(handler.HookEvent) (handler.HTTPResponse, error) {
	return func(hook handler.HookEvent) (handler.HTTPResponse, error) {
		id := hook.Upload.ID
		header := handler.HTTPHeader{"Vidscan-Result": ResultPath(id)}
		resp, err := client.GetUploadResult(hook.Context, &vidscanv1.GetUploadResultRequest{SessionId: id})
		if err != nil {
			log.Warn("tus: upload complete but its result could not be read", "session_id", id, "error", err)
		} else {
			header["Vidscan-Video-Id"] = resp.GetResult().GetVideoId()
			header["Vidscan-Analysis-Id"] = resp.GetResult().GetAnalysisId()
		}
		// Without the ids the upload is still complete; the client GETs Vidscan-Result.
		return handler.HTTPResponse{Header: header}, nil
	}
}

// verifyChecksum holds a PATCH body that carries Upload-Checksum until it is verified
// (tus checksum extension): nothing of a body whose checksum does not match is sent
// to the server. Bodies above maxBytes are refused rather than held.
func verifyChecksum(w http.ResponseWriter, r *http.Request, maxBytes int64, idle time.Duration) bool {
	algorithm, encoded, _ := strings.Cut(strings.TrimSpace(r.Header.Get("Upload-Checksum")), " ")
	if algorithm != "sha256" {
		apierr.Errorf(w, http.StatusBadRequest, codes.InvalidArgument, vidscanv1.ErrorReason_CHECKSUM_NOT_SUPPORTED,
			"Upload-Checksum", fmt.Sprintf("checksum algorithm %q is not supported; use sha256", algorithm))
		return false
	}
	want, err := base64.StdEncoding.DecodeString(strings.TrimSpace(encoded))
	if err != nil || len(want) != sha256.Size {
		apierr.Errorf(w, http.StatusBadRequest, codes.InvalidArgument, vidscanv1.ErrorReason_INVALID_FIELD,
			"Upload-Checksum", "Upload-Checksum: the sha256 value must be 32 bytes in base64")
		return false
	}
	if r.ContentLength < 0 || r.ContentLength > maxBytes {
		apierr.Errorf(w, http.StatusBadRequest, codes.InvalidArgument, vidscanv1.ErrorReason_CHECKSUM_NOT_SUPPORTED,
			"Upload-Checksum", fmt.Sprintf("a PATCH with Upload-Checksum may carry at most %d bytes (with a Content-Length); send smaller chunks", maxBytes))
		return false
	}
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(idle))
	body := make([]byte, r.ContentLength)
	if _, err := io.ReadFull(r.Body, body); err != nil {
		// The client went away before the body was complete: nothing is stored.
		apierr.Errorf(w, http.StatusBadRequest, codes.InvalidArgument, vidscanv1.ErrorReason_BAD_REQUEST,
			"", "the request body ended before Content-Length bytes arrived")
		return false
	}
	if got := sha256.Sum256(body); string(got[:]) != string(want) {
		apierr.Errorf(w, apierr.StatusChecksumMismatch, codes.InvalidArgument, vidscanv1.ErrorReason_CHECKSUM_MISMATCH,
			"Upload-Checksum", "the body does not match Upload-Checksum; nothing of it was stored: send it again")
		return false
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	return true
}

// advertising adds what tusd does not know it offers to its OPTIONS answer: the
// checksum extension (verifyChecksum) and Tus-Max-Size (the server's limit).
type advertising struct {
	http.ResponseWriter
	maxSize int64
	done    bool
}

func (a *advertising) WriteHeader(code int) {
	if !a.done {
		a.done = true
		h := a.Header()
		if ext := h.Get("Tus-Extension"); ext != "" && !strings.Contains(ext, "checksum") {
			h.Set("Tus-Extension", ext+",checksum")
			h.Set("Tus-Checksum-Algorithm", "sha256")
			if a.maxSize > 0 {
				h.Set("Tus-Max-Size", strconv.FormatInt(a.maxSize, 10))
			}
		}
	}
	a.ResponseWriter.WriteHeader(code)
}

func (a *advertising) Write(b []byte) (int, error) {
	if !a.done {
		a.WriteHeader(http.StatusOK)
	}
	return a.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (tusd sets deadlines).
func (a *advertising) Unwrap() http.ResponseWriter { return a.ResponseWriter }
