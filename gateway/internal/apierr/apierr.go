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

// Reasons whose HTTP status differs from grpc-gateway's standard code mapping.
// FILE_TOO_LARGE is INVALID_ARGUMENT on the gRPC side (400) but 413 over HTTP, the
// same status the gateway answers when it stops an oversized body itself.
// STORAGE_FULL is RESOURCE_EXHAUSTED like a user's quota, but it is the server's
// disk that is full, not the client's fault: 507, not 429.
var reasonHTTPStatus = map[string]int{
	"FILE_TOO_LARGE": http.StatusRequestEntityTooLarge,
	"STORAGE_FULL":   http.StatusInsufficientStorage,
}

// Reason returns the ErrorInfo reason of st, or "".
func Reason(st *status.Status) string {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

// HTTPStatus maps st to an HTTP status: grpc-gateway's standard mapping
// (runtime.HTTPStatusFromCode) except for the reasons in reasonHTTPStatus.
func HTTPStatus(st *status.Status) int {
	if s, ok := reasonHTTPStatus[Reason(st)]; ok {
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
	if httpStatus == 0 {
		httpStatus = HTTPStatus(st)
	}
	body := BuildBody(st, time.Now())
	buf, err := json.Marshal(body)
	if err != nil { // cannot happen: only strings, bools, floats and maps of them
		buf = []byte(`{"error_code":"INTERNAL","error_message":"failed to marshal the error body"}`)
		httpStatus = http.StatusInternalServerError
	}
	h := w.Header()
	h.Del("Trailer")
	h.Del("Transfer-Encoding")
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(buf)))
	if st.Code() == codes.Unauthenticated {
		h.Set("WWW-Authenticate", "Bearer")
	}
	if s, ok := body.Details["retry_after_seconds"].(float64); ok && s >= 0 {
		h.Set("Retry-After", strconv.Itoa(int(s+0.999)))
	}
	w.WriteHeader(httpStatus)
	_, _ = w.Write(buf)
}

// Errorf writes an error the gateway itself detected; see New.
func Errorf(w http.ResponseWriter, httpStatus int, c codes.Code, reason, field, msg string) {
	Write(w, httpStatus, New(c, reason, field, msg, nil))
}

// New builds a status shaped like the server's: ErrorInfo{reason, domain
// "vidscan.gateway", metadata md} when reason is set, plus a BadRequest field
// violation for field when it is set (its description is msg less a "field: " prefix).
func New(c codes.Code, reason, field, msg string, md map[string]string) *status.Status {
	st := status.New(c, msg)
	var details []protoadapt.MessageV1
	if reason != "" {
		details = append(details, &errdetails.ErrorInfo{Reason: reason, Domain: "vidscan.gateway", Metadata: md})
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
// status, and without an ErrorInfo its error_code is the HTTP status text in
// SCREAMING_SNAKE ("METHOD_NOT_ALLOWED").
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

// httpReason is "METHOD_NOT_ALLOWED" for 405.
func httpReason(httpStatus int) string {
	text := http.StatusText(httpStatus)
	if text == "" {
		return "HTTP_" + strconv.Itoa(httpStatus)
	}
	return strings.ToUpper(strings.NewReplacer(" ", "_", "-", "_", "'", "").Replace(text))
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
