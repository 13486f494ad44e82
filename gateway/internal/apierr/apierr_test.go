package apierr

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	vidscanv1 "github.com/vidscan/vidscan/gateway/gen/vidscan/v1"
)

var now = time.Date(2025, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600))

func TestBuildBodyFromDetails(t *testing.T) {
	st, err := status.New(codes.InvalidArgument, "size: does not match").WithDetails(
		&errdetails.ErrorInfo{Reason: "SIZE_MISMATCH", Domain: "vidscan", Metadata: map[string]string{"declared": "10", "received": "9"}},
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "declared_size", Description: "does not match"}}},
		&vidscanv1.CleanupReport{CleanupPerformed: true, S3Cleanup: true, SessionCleanup: true},
	)
	if err != nil {
		t.Fatal(err)
	}
	b := BuildBody(st, now)
	if b.ErrorCode != "SIZE_MISMATCH" || b.ErrorMessage != "size: does not match" {
		t.Fatalf("code/message: %+v", b)
	}
	if b.Timestamp != "2025-01-02T02:04:05Z" {
		t.Fatalf("timestamp %q", b.Timestamp)
	}
	if !b.CleanupPerformed || !b.CleanupDetails.S3Cleanup || !b.CleanupDetails.SessionCleanup || b.CleanupDetails.DatabaseCleanup {
		t.Fatalf("cleanup: %+v", b)
	}
	raw, _ := json.Marshal(b)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	details := m["details"].(map[string]any)
	if details["declared"] != "10" || details["received"] != "9" {
		t.Fatalf("metadata not in details: %v", details)
	}
	fv := details["field_violations"].([]any)[0].(map[string]any)
	if fv["field"] != "declared_size" || fv["description"] != "does not match" {
		t.Fatalf("field violation: %v", fv)
	}
	cd := m["cleanup_details"].(map[string]any)
	for _, k := range []string{"s3_cleanup", "session_cleanup", "database_cleanup", "quota_released"} {
		if _, ok := cd[k]; !ok {
			t.Fatalf("cleanup_details lacks %s: %v", k, cd)
		}
	}
}

func TestBuildBodyWithoutDetails(t *testing.T) {
	b := BuildBody(status.New(codes.NotFound, "no such video"), now)
	if b.ErrorCode != "NOT_FOUND" || b.CleanupPerformed || len(b.Details) != 0 {
		t.Fatalf("%+v", b)
	}
	raw, _ := json.Marshal(b)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	if _, ok := m["details"].(map[string]any); !ok {
		t.Fatalf("details must be an object, got %s", raw)
	}
}

func TestBuildBodyQuotaAndRetry(t *testing.T) {
	st, _ := status.New(codes.ResourceExhausted, "quota").WithDetails(
		&errdetails.ErrorInfo{Reason: "QUOTA_EXCEEDED"},
		&errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{{Subject: "user:1", Description: "100 uploads"}}},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(1500 * time.Millisecond)},
		&vidscanv1.CleanupReport{QuotaReleased: true},
	)
	b := BuildBody(st, now)
	qv := b.Details["quota_violations"].([]QuotaViolation)
	if len(qv) != 1 || qv[0].Subject != "user:1" {
		t.Fatalf("%+v", b.Details)
	}
	if b.Details["retry_after_seconds"] != 1.5 {
		t.Fatalf("%+v", b.Details)
	}
	if !b.CleanupPerformed || !b.CleanupDetails.QuotaReleased {
		t.Fatalf("cleanup_performed must follow the flags: %+v", b)
	}
	w := httptest.NewRecorder()
	Write(w, 0, st)
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "2" {
		t.Fatalf("%d %v", w.Code, w.Header())
	}
}

func TestHTTPStatus(t *testing.T) {
	cases := []struct {
		code   codes.Code
		reason string
		want   int
	}{
		{codes.NotFound, "SESSION_NOT_FOUND", 404},
		{codes.InvalidArgument, "HASH_MISMATCH", 400},
		{codes.InvalidArgument, "FILE_TOO_LARGE", 413},
		{codes.Unauthenticated, "", 401},
		{codes.PermissionDenied, "", 403},
		{codes.ResourceExhausted, "QUOTA_EXCEEDED", 429},
		{codes.ResourceExhausted, "STORAGE_FULL", 507},
		{codes.Unavailable, "", 503},
		{codes.Aborted, "SESSION_BUSY", 409},
		{codes.OutOfRange, "INVALID_OFFSET", 400},
		{codes.Canceled, "", 499},
		{codes.Internal, "", 500},
	}
	for _, c := range cases {
		st := New(c.code, ReasonOf(c.reason), "", "m", nil)
		if got := HTTPStatus(st); got != c.want {
			t.Errorf("%v/%s: got %d, want %d", c.code, c.reason, got, c.want)
		}
	}
}

func TestWriteUnauthenticated(t *testing.T) {
	w := httptest.NewRecorder()
	Write(w, 0, New(codes.Unauthenticated, vidscanv1.ErrorReason_UNAUTHENTICATED, "", "missing bearer token", nil))
	if w.Code != 401 || w.Header().Get("WWW-Authenticate") != "Bearer" || w.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("%d %v", w.Code, w.Header())
	}
	var b Body
	if err := json.Unmarshal(w.Body.Bytes(), &b); err != nil || b.ErrorCode != "UNAUTHENTICATED" {
		t.Fatalf("%v %s", err, w.Body)
	}
}

func TestNewWithField(t *testing.T) {
	st := New(codes.InvalidArgument, vidscanv1.ErrorReason_INVALID_FIELD, "metadata", "metadata: must be a JSON object", map[string]string{"k": "v"})
	b := BuildBody(st, now)
	fv := b.Details["field_violations"].([]FieldViolation)
	if b.ErrorCode != "INVALID_FIELD" || fv[0].Field != "metadata" || fv[0].Description != "must be a JSON object" || b.Details["k"] != "v" {
		t.Fatalf("%+v", b)
	}
}

func TestHandlerRoutingErrors(t *testing.T) {
	for _, c := range []struct {
		err  error
		want int
		code string
	}{
		{&runtime.HTTPStatusError{HTTPStatus: 405, Err: status.Error(codes.Unimplemented, "Method Not Allowed")}, 405, "METHOD_NOT_ALLOWED"},
		{&runtime.HTTPStatusError{HTTPStatus: 404, Err: status.Error(codes.NotFound, "Not Found")}, 404, "NOT_FOUND"},
		{status.Error(codes.Unavailable, "connection refused"), 503, "UNAVAILABLE"},
		{errors.New("plain"), 500, "UNKNOWN"},
	} {
		w := httptest.NewRecorder()
		Handler(t.Context(), nil, nil, w, httptest.NewRequest("GET", "/", nil), c.err)
		var b Body
		_ = json.Unmarshal(w.Body.Bytes(), &b)
		if w.Code != c.want || b.ErrorCode != c.code {
			t.Errorf("%v: got %d %s, want %d %s", c.err, w.Code, b.ErrorCode, c.want, c.code)
		}
	}
}

// Every vidscan.v1.ErrorReason has an HTTP status of its own: a reason added to the
// proto without one fails here (and tests/test_error_reasons.py checks the statuses
// against the server's gRPC codes).
func TestEveryReasonHasAnHTTPStatus(t *testing.T) {
	for number, name := range vidscanv1.ErrorReason_name {
		reason := vidscanv1.ErrorReason(number)
		if reason == vidscanv1.ErrorReason_ERROR_REASON_UNSPECIFIED {
			if _, ok := reasonHTTPStatus[reason]; ok {
				t.Errorf("ERROR_REASON_UNSPECIFIED must not have an HTTP status")
			}
			continue
		}
		s, ok := reasonHTTPStatus[reason]
		if !ok {
			t.Errorf("%s has no HTTP status in reasonHTTPStatus", name)
			continue
		}
		if got := HTTPStatus(New(codes.Unknown, reason, "", "m", nil)); got != s {
			t.Errorf("%s: HTTPStatus %d, table %d", name, got, s)
		}
	}
}

// A reason this gateway does not know (a newer server) falls back to the code.
func TestUnknownReasonFallsBackToTheCode(t *testing.T) {
	st, _ := status.New(codes.Unavailable, "m").WithDetails(&errdetails.ErrorInfo{Reason: "SOMETHING_NEWER"})
	if got := HTTPStatus(st); got != http.StatusServiceUnavailable {
		t.Fatalf("got %d", got)
	}
	if b := BuildBody(st, time.Now()); b.ErrorCode != "SOMETHING_NEWER" {
		t.Fatalf("error_code %q: the wire reason is reported as sent", b.ErrorCode)
	}
}
