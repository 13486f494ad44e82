// Package httpmw holds the gateway's HTTP middleware: X-Request-Id, CORS, the
// access log, Prometheus metrics and OpenTelemetry server spans.
package httpmw

import (
	"crypto/rand"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"

	vidscanv1 "github.com/vidscan/vidscan/gateway/gen/vidscan/v1"
	"github.com/vidscan/vidscan/gateway/internal/apierr"
)

// RequestIDHeader is propagated both ways: taken from the request (or generated),
// forwarded upstream as `x-request-id` metadata and echoed in the response.
const RequestIDHeader = "X-Request-Id"

// RequestID makes sure every request carries a usable X-Request-Id (a client's value is
// kept when it is 1..128 printable ASCII characters, else replaced by a new UUIDv4)
// and echoes it in the response. The request's span (if any) gets it as the
// vidscan.request_id attribute.
func RequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(RequestIDHeader)
		if !ValidRequestID(id) {
			id = NewRequestID()
			r.Header.Set(RequestIDHeader, id)
		}
		w.Header().Set(RequestIDHeader, id)
		if span := trace.SpanFromContext(r.Context()); span.IsRecording() {
			span.SetAttributes(attribute.String(RequestIDAttribute, id))
		}
		next.ServeHTTP(w, r)
	})
}

// ValidRequestID: 1..128 characters of printable ASCII without spaces.
func ValidRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' {
			return false
		}
	}
	return true
}

// NewRequestID returns a random UUIDv4.
func NewRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = (b[6] & 0x0f) | 0x40
	b[8] = (b[8] & 0x3f) | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// CORS answers preflights and adds the CORS response headers for allowed origins.
// origins: exact origins ("https://dash.example.com") or "*" for any. Empty: no CORS
// headers at all (same-origin only). Credentials (cookies) are not allowed: the API
// authenticates with the Authorization header.
type CORS struct {
	any     bool
	origins map[string]bool
}

// NewCORS parses a comma-separated origin list.
func NewCORS(list string) *CORS {
	c := &CORS{origins: map[string]bool{}}
	for _, o := range strings.Split(list, ",") {
		o = strings.TrimRight(strings.TrimSpace(o), "/")
		switch o {
		case "":
		case "*":
			c.any = true
		default:
			c.origins[o] = true
		}
	}
	return c
}

// Enabled reports whether any origin is allowed.
func (c *CORS) Enabled() bool { return c.any || len(c.origins) > 0 }

// Allowed reports whether origin may call the API.
func (c *CORS) Allowed(origin string) bool { return origin != "" && (c.any || c.origins[origin]) }

const (
	// HEAD and PATCH, the tus headers and the Vidscan-* result headers: the tus
	// endpoint (/v1/tus/) is used from browsers (tus-js-client, Uppy).
	corsMethods        = "GET, HEAD, POST, PATCH, DELETE, OPTIONS"
	corsDefaultHeaders = "Authorization, Content-Type, X-Request-Id, Tus-Resumable, Upload-Length, Upload-Metadata, Upload-Offset, Upload-Checksum, Upload-Defer-Length, Upload-Concat, X-HTTP-Method-Override"
	corsExposeHeaders  = "X-Request-Id, Location, Retry-After, WWW-Authenticate, Tus-Resumable, Tus-Version, Tus-Extension, Tus-Max-Size, Tus-Checksum-Algorithm, Upload-Offset, Upload-Length, Upload-Metadata, Upload-Expires, Vidscan-Video-Id, Vidscan-Analysis-Id, Vidscan-Result"
	corsMaxAge         = "600"
)

// Wrap returns next with CORS handling.
func (c *CORS) Wrap(next http.Handler) http.Handler {
	if !c.Enabled() {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
		h := w.Header()
		h.Add("Vary", "Origin")
		if !c.Allowed(origin) {
			if preflight {
				apierr.Errorf(w, http.StatusForbidden, codes.PermissionDenied, vidscanv1.ErrorReason_CORS_ORIGIN_NOT_ALLOWED, "",
					fmt.Sprintf("origin %q is not allowed", origin))
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		if c.any {
			h.Set("Access-Control-Allow-Origin", "*")
		} else {
			h.Set("Access-Control-Allow-Origin", origin)
		}
		if preflight {
			h.Add("Vary", "Access-Control-Request-Method")
			h.Add("Vary", "Access-Control-Request-Headers")
			h.Set("Access-Control-Allow-Methods", corsMethods)
			if req := r.Header.Get("Access-Control-Request-Headers"); req != "" {
				h.Set("Access-Control-Allow-Headers", req)
			} else {
				h.Set("Access-Control-Allow-Headers", corsDefaultHeaders)
			}
			h.Set("Access-Control-Max-Age", corsMaxAge)
			w.WriteHeader(http.StatusNoContent)
			return
		}
		h.Set("Access-Control-Expose-Headers", corsExposeHeaders)
		next.ServeHTTP(w, r)
	})
}

// AccessLog logs one line per request.
func AccessLog(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(rw, r)
		if rw.status == 0 {
			rw.status = http.StatusOK
		}
		log.Info("http", "method", r.Method, "path", r.URL.Path, "status", rw.status,
			"bytes_out", rw.bytes, "bytes_in", r.ContentLength, "duration", time.Since(start).Round(time.Microsecond),
			"request_id", w.Header().Get(RequestIDHeader))
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// Flush keeps http.Flusher for grpc-gateway's streaming responses.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection (read deadlines).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
