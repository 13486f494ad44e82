package restjson

import (
	"encoding/json"
	"net/url"
	"testing"

	"github.com/grpc-ecosystem/grpc-gateway/v2/utilities"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	vidscanv1 "github.com/vidscan/vidscan/gateway/gen/vidscan/v1"
)

func decode(t *testing.T, raw []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestTheRESTShape(t *testing.T) {
	md, _ := structpb.NewStruct(map[string]any{"k": "v"})
	raw, err := Marshal(&vidscanv1.UploadSession{
		SessionId: "s", State: vidscanv1.UploadSessionState_UPLOAD_SESSION_STATE_ACTIVE,
		MaxBytes: 1 << 40, CreatedAt: timestamppb.New(timestamppb.Now().AsTime()),
	})
	if err != nil {
		t.Fatal(err)
	}
	m := decode(t, raw)
	if m["state"] != "active" || m["max_bytes"] != float64(1<<40) || m["committed_bytes"] != float64(0) {
		t.Fatalf("%s", raw)
	}
	if v, ok := m["expires_at"]; !ok || v != nil { // unset message: null, present
		t.Fatalf("%s", raw)
	}
	if items, ok := m["allowed_formats"].([]any); !ok || len(items) != 0 {
		t.Fatalf("empty list must be []: %s", raw)
	}
	if _, ok := m["created_at"].(string); !ok {
		t.Fatalf("timestamp as RFC 3339: %s", raw)
	}

	raw, _ = Marshal(&vidscanv1.UploadResult{UploadStatus: vidscanv1.UploadStatus_UPLOAD_STATUS_ANALYSIS_FAILED, Metadata: md})
	m = decode(t, raw)
	if m["upload_status"] != "analysis_failed" || m["confidence_score"] != nil || m["metadata"].(map[string]any)["k"] != "v" {
		t.Fatalf("%s", raw)
	}
	if _, ok := m["confidence_score"]; !ok {
		t.Fatalf("unset optional must be present as null: %s", raw)
	}
	raw, _ = Marshal(&vidscanv1.UploadSession{})
	if decode(t, raw)["state"] != nil {
		t.Fatalf("UNSPECIFIED must be null: %s", raw)
	}
}

func TestEnumPrefix(t *testing.T) {
	ed := vidscanv1.UploadSessionState(0).Descriptor()
	if got := EnumPrefix(ed); got != "UPLOAD_SESSION_STATE_" {
		t.Fatal(got)
	}
}

func TestQueryParserAcceptsTheRESTSpelling(t *testing.T) {
	for _, given := range []string{"analyzed", "ANALYSIS_STATUS_ANALYZED", "3"} {
		var req vidscanv1.ListVideosRequest
		if err := (&QueryParser{}).Parse(&req, url.Values{"analysis_status": {given}}, utilities.NewDoubleArray(nil)); err != nil {
			t.Fatal(err)
		}
		if req.GetAnalysisStatus() != vidscanv1.AnalysisStatus_ANALYSIS_STATUS_ANALYZED {
			t.Fatalf("%s -> %v", given, req.GetAnalysisStatus())
		}
	}
}
