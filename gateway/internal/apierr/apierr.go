// Package apierr turns a gRPC status (google.rpc.Status with vidscan's details) into
// the earlier REST API's error body and writes it. Every error the gateway answers
// goes through here: upstream statuses on the generated routes (as grpc-gateway's
// error handler), routing errors (404/405) and the hand-written upload route.
//
//	{
//	  "error_code":        ErrorInfo.reason, else the gRPC code name ("NOT_FOUND"),
//	  "error_message":     the status message,
//	  "details":           ErrorInfo.metadata + "field_violations" (BadRequest)
//	                       + "quota_violations" (QuotaFailure) + "retry_after_seconds" (RetryInfo),
//	  "cleanup_performed": CleanupReport.cleanup_performed (false without a report),
//	  "cleanup_details":   {"s3_cleanup", "session_cleanup", "database_cleanup", "quota_released"},
//	  "timestamp":         RFC 3339, UTC
//	}
package apierr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"

	vidscanv1 "github.com/vidscan/vidscan/gateway/gen/vidscan/v1"
)

// Body is the JSON error body of the REST API.
type Body struct {
	ErrorCode        string         `json:"error_code"`
	ErrorMessage     string         `json:"error_message"`
	Details          map[string]any `json:"details"`
	CleanupPerformed bool           `json:"cleanup_performed"`
	CleanupDetails   CleanupDetails `json:"cleanup_details"`
	Timestamp        string         `json:"timestamp"`
}

// CleanupDetails mirrors vidscan.v1.CleanupReport; all false when the status has none.
type CleanupDetails struct {
	S3Cleanup       bool `json:"s3_cleanup"`
	SessionCleanup  bool `json:"session_cleanup"`
	DatabaseCleanup bool `json:"database_cleanup"`
	QuotaReleased   bool `json:"quota_released"`
}

// FieldViolation is one entry of details.field_violations.
type FieldViolation struct {
	Field       string `json:"field"`
	Description string `json:"description"`
	Reason      string `json:"reason,omitempty"`
}

// QuotaViolation is one entry of details.quota_violations.
type QuotaViolation struct {
	Subject     string `json:"subject"`
	Description string `json:"description"`
}

// reasonHTTPStatus is the HTTP status of every vidscan.v1.ErrorReason, keyed by the
// generated enum (TestEveryReasonHasAnHTTPStatus fails when a value is missing).
// Most are grpc-gateway's standard mapping of the gRPC code the server sends with
// that reason (runtime.HTTPStatusFromCode); the exceptions are deliberate:
// FILE_TOO_LARGE is INVALID_ARGUMENT on the gRPC side (400) but 413 over HTTP, the
// same status the gateway answers when it stops an oversized body itself.
// STORAGE_FULL is RESOURCE_EXHAUSTED like a user's quota, but it is the server's
// disk that is full, not the client's fault: 507, not 429.
// RANGE_NOT_SATISFIABLE is OUT_OF_RANGE (400 in grpc-gateway) but HTTP has its own
// status for it, which browsers and players understand: 416.
// MEDIA_WORKERS_BUSY and the other UNAVAILABLE reasons are 503 (with Retry-After).
// The gateway's own reasons (UNSUPPORTED_MEDIA_TYPE and after) are the statuses it
// answers them with.
var reasonHTTPStatus = map[vidscanv1.ErrorReason]int{
	vidscanv1.ErrorReason_UNAUTHENTICATED:               http.StatusUnauthorized,
	vidscanv1.ErrorReason_SESSION_NOT_FOUND:             http.StatusNotFound,
	vidscanv1.ErrorReason_VIDEO_NOT_FOUND:               http.StatusNotFound,
	vidscanv1.ErrorReason_ANALYSIS_NOT_FOUND:            http.StatusNotFound,
	vidscanv1.ErrorReason_MISSING_HEADER:                http.StatusBadRequest,
	vidscanv1.ErrorReason_INVALID_FIELD:                 http.StatusBadRequest,
	vidscanv1.ErrorReason_METADATA_TOO_LARGE:            http.StatusBadRequest,
	vidscanv1.ErrorReason_EMPTY_UPLOAD:                  http.StatusBadRequest,
	vidscanv1.ErrorReason_FILE_TOO_LARGE:                http.StatusRequestEntityTooLarge,
	vidscanv1.ErrorReason_UNSUPPORTED_FORMAT:            http.StatusBadRequest,
	vidscanv1.ErrorReason_CORRUPT_CONTAINER:             http.StatusBadRequest,
	vidscanv1.ErrorReason_NO_VIDEO_STREAM:               http.StatusBadRequest,
	vidscanv1.ErrorReason_VIDEO_UNDECODABLE:             http.StatusBadRequest,
	vidscanv1.ErrorReason_VIDEO_LIMITS_EXCEEDED:         http.StatusBadRequest,
	vidscanv1.ErrorReason_SIZE_MISMATCH:                 http.StatusBadRequest,
	vidscanv1.ErrorReason_HASH_MISMATCH:                 http.StatusBadRequest,
	vidscanv1.ErrorReason_MODEL_NOT_ALLOWED:             http.StatusBadRequest,
	vidscanv1.ErrorReason_CALLBACK_URL_NOT_ALLOWED:      http.StatusBadRequest,
	vidscanv1.ErrorReason_UPLOAD_INCOMPLETE:             http.StatusBadRequest,
	vidscanv1.ErrorReason_INVALID_OFFSET:                http.StatusBadRequest, // OUT_OF_RANGE
	vidscanv1.ErrorReason_SESSION_BUSY:                  http.StatusConflict,   // ABORTED
	vidscanv1.ErrorReason_SESSION_LOCK_LOST:             http.StatusConflict,
	vidscanv1.ErrorReason_QUOTA_EXCEEDED:                http.StatusTooManyRequests,
	vidscanv1.ErrorReason_UPLOAD_CANCELLED:              499, // CANCELLED, as grpc-gateway answers it
	vidscanv1.ErrorReason_STORAGE_UNAVAILABLE:           http.StatusServiceUnavailable,
	vidscanv1.ErrorReason_DATABASE_UNAVAILABLE:          http.StatusServiceUnavailable,
	vidscanv1.ErrorReason_SESSION_STORE_UNAVAILABLE:     http.StatusServiceUnavailable,
	vidscanv1.ErrorReason_QUEUE_UNAVAILABLE:             http.StatusServiceUnavailable,
	vidscanv1.ErrorReason_DETECTOR_UNAVAILABLE:          http.StatusServiceUnavailable,
	vidscanv1.ErrorReason_SHUTTING_DOWN:                 http.StatusServiceUnavailable,
	vidscanv1.ErrorReason_STORAGE_ERROR:                 http.StatusInternalServerError,
	vidscanv1.ErrorReason_DATABASE_ERROR:                http.StatusInternalServerError,
	vidscanv1.ErrorReason_SESSION_STORE_ERROR:           http.StatusInternalServerError,
	vidscanv1.ErrorReason_QUEUE_ERROR:                   http.StatusInternalServerError,
	vidscanv1.ErrorReason_STORAGE_FULL:                  http.StatusInsufficientStorage,
	vidscanv1.ErrorReason_MEDIA_WORKER_FAILED:           http.StatusInternalServerError,
	vidscanv1.ErrorReason_DETECTOR_ERROR:                http.StatusInternalServerError,
	vidscanv1.ErrorReason_INTERNAL:                      http.StatusInternalServerError,
	vidscanv1.ErrorReason_MEDIA_WORKERS_BUSY:            http.StatusServiceUnavailable,
	vidscanv1.ErrorReason_UNSUPPORTED_MEDIA_TYPE:        http.StatusUnsupportedMediaType,
	vidscanv1.ErrorReason_MALFORMED_MULTIPART:           http.StatusBadRequest,
	vidscanv1.ErrorReason_UPLOAD_IDLE_TIMEOUT:           http.StatusRequestTimeout,
	vidscanv1.ErrorReason_CORS_ORIGIN_NOT_ALLOWED:       http.StatusForbidden,
	vidscanv1.ErrorReason_NOT_FOUND:                     http.StatusNotFound,
	vidscanv1.ErrorReason_METHOD_NOT_ALLOWED:            http.StatusMethodNotAllowed,
	vidscanv1.ErrorReason_BAD_REQUEST:                   http.StatusBadRequest,
	vidscanv1.ErrorReason_IDENTITY_PROVIDER_UNAVAILABLE: http.StatusServiceUnavailable,
	vidscanv1.ErrorReason_UPLOAD_STALLED:                http.StatusConflict, // ABORTED: resume
	vidscanv1.ErrorReason_TOO_MANY_SESSIONS:             http.StatusTooManyRequests,
	vidscanv1.ErrorReason_TOO_MANY_STREAMS:              http.StatusTooManyRequests,
	vidscanv1.ErrorReason_SERVER_BUSY:                   http.StatusTooManyRequests,
	vidscanv1.ErrorReason_RATE_LIMITED:                  http.StatusTooManyRequests,
	vidscanv1.ErrorReason_RANGE_NOT_SATISFIABLE:         http.StatusRequestedRangeNotSatisfiable,
	vidscanv1.ErrorReason_UPLOAD_NOT_COMPLETED:          http.StatusBadRequest, // FAILED_PRECONDITION
	vidscanv1.ErrorReason_CHECKSUM_MISMATCH:             460,                   // StatusChecksumMismatch (tus)
	vidscanv1.ErrorReason_CHECKSUM_NOT_SUPPORTED:        http.StatusBadRequest,
}

// StatusChecksumMismatch is the tus checksum extension's "460 Checksum Mismatch".
const StatusChecksumMismatch = 460

// Reason returns the ErrorInfo reason of st as sent (a newer server may send a
// name this gateway does not know), or "".
func Reason(st *status.Status) string {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

// ReasonOf parses a wire reason into the generated enum; ERROR_REASON_UNSPECIFIED
// for "" or a name this gateway does not know.
func ReasonOf(name string) vidscanv1.ErrorReason {
	return vidscanv1.ErrorReason(vidscanv1.ErrorReason_value[name])
}

// HTTPStatus maps st to an HTTP status: its reason's entry in reasonHTTPStatus, or
// grpc-gateway's standard mapping of its code (runtime.HTTPStatusFromCode) for a
// status without a reason this gateway knows.
func HTTPStatus(st *status.Status) int {
	if s, ok := reasonHTTPStatus[ReasonOf(Reason(st))]; ok {
		return s
	}
	return runtime.HTTPStatusFromCode(st.Code())
}

// CodeName is the google.rpc.Code name of c, e.g. "NOT_FOUND".
func CodeName(c codes.Code) string {
	if name, ok := code.Code_name[int32(c)]; ok {
		return name
	}
	return "UNKNOWN"
}

// BuildBody builds the error body from st. The details it understands are
// google.rpc.ErrorInfo, BadRequest, QuotaFailure, RetryInfo and vidscan.v1.CleanupReport;
// others are ignored. A status without ErrorInfo gets the code name as error_code.
func BuildBody(st *status.Status, now time.Time) Body {
	b := Body{
		ErrorCode:    CodeName(st.Code()),
		ErrorMessage: st.Message(),
		Details:      map[string]any{},
		Timestamp:    now.UTC().Format(time.RFC3339),
	}
	var fields []FieldViolation
	var quotas []QuotaViolation
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			if d.GetReason() != "" {
				b.ErrorCode = d.GetReason()
			}
			for k, v := range d.GetMetadata() {
				b.Details[k] = v
			}
		case *errdetails.BadRequest:
			for _, v := range d.GetFieldViolations() {
				fields = append(fields, FieldViolation{Field: v.GetField(), Description: v.GetDescription(), Reason: v.GetReason()})
			}
		case *errdetails.QuotaFailure:
			for _, v := range d.GetViolations() {
				quotas = append(quotas, QuotaViolation{Subject: v.GetSubject(), Description: v.GetDescription()})
			}
		case *errdetails.RetryInfo:
			if rd := d.GetRetryDelay(); rd != nil {
				b.Details["retry_after_seconds"] = rd.AsDuration().Seconds()
			}
		case *vidscanv1.CleanupReport:
			b.CleanupDetails = CleanupDetails{
				S3Cleanup:       d.GetS3Cleanup(),
				SessionCleanup:  d.GetSessionCleanup(),
				DatabaseCleanup: d.GetDatabaseCleanup(),
				QuotaReleased:   d.GetQuotaReleased(),
			}
			b.CleanupPerformed = d.GetCleanupPerformed() || d.GetS3Cleanup() || d.GetSessionCleanup() ||
				d.GetDatabaseCleanup() || d.GetQuotaReleased()
		}
	}
	if len(fields) > 0 {
		b.Details["field_violations"] = fields
	}
	if len(quotas) > 0 {
		b.Details["quota_violations"] = quotas
	}
	return b
}

// Write answers st with httpStatus (0: derived from st with HTTPStatus) and the error body.
func Write(w http.ResponseWriter, httpStatus int, st *status.Status) {
	httpStatus, header, buf := Response(httpStatus, st)
	h := w.Header()
	h.Del("Trailer")
	h.Del("Transfer-Encoding")
	for k, v := range header {
		h[k] = v
	}
	w.WriteHeader(httpStatus)
	_, _ = w.Write(buf)
}

// Response is what Write sends for st: the HTTP status (httpStatus, or derived from
// st when 0), the headers (Content-Type, Content-Length, WWW-Authenticate,
// Retry-After) and the JSON error body. For handlers that write responses their own
// way (the tus handler).
func Response(httpStatus int, st *status.Status) (int, http.Header, []byte) {
	if httpStatus == 0 {
		httpStatus = HTTPStatus(st)
	}
	body := BuildBody(st, time.Now())
	buf, err := json.Marshal(body)
	if err != nil { // cannot happen: only strings, bools, floats and maps of them
		buf = []byte(`{"error_code":"INTERNAL","error_message":"failed to marshal the error body"}`)
		httpStatus = http.StatusInternalServerError
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(buf)))
	if st.Code() == codes.Unauthenticated {
		h.Set("WWW-Authenticate", "Bearer")
	}
	if s, ok := body.Details["retry_after_seconds"].(float64); ok && s >= 0 {
		h.Set("Retry-After", strconv.Itoa(int(s+0.999)))
	}
	return httpStatus, h, buf
}

// Errorf writes an error the gateway itself detected; see New.
func Errorf(w http.ResponseWriter, httpStatus int, c codes.Code, reason vidscanv1.ErrorReason, field, msg string) {
	Write(w, httpStatus, New(c, reason, field, msg, nil))
}

// New builds a status shaped like the server's: ErrorInfo{reason's name, domain
// "vidscan.gateway", metadata md} unless reason is ERROR_REASON_UNSPECIFIED, plus a BadRequest field
// violation for field when it is set (its description is msg less a "field: " prefix).
func New(c codes.Code, reason vidscanv1.ErrorReason, field, msg string, md map[string]string) *status.Status {
	st := status.New(c, msg)
	var details []protoadapt.MessageV1
	if reason != vidscanv1.ErrorReason_ERROR_REASON_UNSPECIFIED {
		details = append(details, &errdetails.ErrorInfo{Reason: reason.String(), Domain: "vidscan.gateway", Metadata: md})
	}
	if field != "" {
		desc := strings.TrimPrefix(msg, field+": ")
		details = append(details, &errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: field, Description: desc},
		}})
	}
	if len(details) == 0 {
		return st
	}
	withDetails, err := st.WithDetails(details...)
	if err != nil {
		return st
	}
	return withDetails
}

// Handler is the runtime.ErrorHandlerFunc of the gateway's ServeMux. A
// runtime.HTTPStatusError (routing errors: 404, 405, malformed paths) keeps its HTTP
// status, and without an ErrorInfo its error_code is the reason for that routing
// status (NOT_FOUND, METHOD_NOT_ALLOWED, BAD_REQUEST), else the gRPC code name.
func Handler(_ context.Context, _ *runtime.ServeMux, _ runtime.Marshaler, w http.ResponseWriter, _ *http.Request, err error) {
	httpStatus := 0
	var he *runtime.HTTPStatusError
	if errors.As(err, &he) {
		httpStatus = he.HTTPStatus
		err = he.Err
	}
	st := status.Convert(err)
	if httpStatus != 0 && Reason(st) == "" {
		st = New(st.Code(), httpReason(httpStatus), "", st.Message(), nil)
	}
	Write(w, httpStatus, st)
}

// routingReasons are the gateway's reasons for grpc-gateway's routing statuses.
var routingReasons = map[int]vidscanv1.ErrorReason{
	http.StatusBadRequest:       vidscanv1.ErrorReason_BAD_REQUEST,
	http.StatusNotFound:         vidscanv1.ErrorReason_NOT_FOUND,
	http.StatusMethodNotAllowed: vidscanv1.ErrorReason_METHOD_NOT_ALLOWED,
}

// httpReason is METHOD_NOT_ALLOWED for 405; ERROR_REASON_UNSPECIFIED (no ErrorInfo:
// error_code is the gRPC code name) for a status without a reason of its own.
func httpReason(httpStatus int) vidscanv1.ErrorReason {
	return routingReasons[httpStatus]
}

// RoutingHandler is the runtime.RoutingErrorHandlerFunc: unlike grpc-gateway's default
// (which answers 405 as 501 UNIMPLEMENTED) it keeps the routing status: 404 NOT_FOUND,
// 405 METHOD_NOT_ALLOWED, 400 BAD_REQUEST.
func RoutingHandler(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, httpStatus int) {
	c := codes.Internal
	switch httpStatus {
	case http.StatusBadRequest:
		c = codes.InvalidArgument
	case http.StatusNotFound:
		c = codes.NotFound
	case http.StatusMethodNotAllowed:
		c = codes.Unimplemented
	}
	msg := http.StatusText(httpStatus)
	if httpStatus == http.StatusNotFound || httpStatus == http.StatusMethodNotAllowed {
		msg = fmt.Sprintf("%s: %s %s", msg, r.Method, r.URL.Path)
	}
	Handler(ctx, mux, m, w, r, &runtime.HTTPStatusError{HTTPStatus: httpStatus, Err: status.Error(c, msg)})
}
