package upload

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	vidscanv1 "github.com/vidscan/vidscan/gateway/gen/vidscan/v1"
)

func fields(t *testing.T, kv ...string) *Fields {
	t.Helper()
	var f Fields
	for i := 0; i < len(kv); i += 2 {
		if err := f.Set(kv[i], kv[i+1]); err != nil {
			t.Fatalf("Set(%s): %v", kv[i], err)
		}
	}
	return &f
}

func TestHeaderDefaultsFromFilePart(t *testing.T) {
	h, err := fields(t).Header("s1", "clip.mp4", "video/mp4", 100)
	if err != nil {
		t.Fatal(err)
	}
	if h.GetSessionId() != "s1" || h.GetFilename() != "clip.mp4" || h.GetContentType() != "video/mp4" {
		t.Fatalf("%v", h)
	}
	if h.DeclaredSize != nil || h.GetMetadata() != nil || h.GetDeclaredSha256() != "" || h.GetModel() != "" {
		t.Fatalf("unset fields must stay unset: %v", h)
	}
}

func TestHeaderFieldsOverride(t *testing.T) {
	f := fields(t,
		"filename", " renamed.mov ", "content_type", "video/quicktime", "model", "effnet",
		"sha256", "ABCDEF", "size", "42", "write_offset", "7",
		"metadata", `{"source":"dash","tags":["a"],"n":1.5}`,
		"unknown", "ignored")
	h, err := f.Header("s1", "clip.mp4", "application/octet-stream", 100)
	if err != nil {
		t.Fatal(err)
	}
	if h.GetFilename() != "renamed.mov" || h.GetContentType() != "video/quicktime" || h.GetModel() != "effnet" ||
		h.GetDeclaredSha256() != "abcdef" || h.GetDeclaredSize() != 42 || h.GetWriteOffset() != 7 {
		t.Fatalf("%v", h)
	}
	if h.GetMetadata().GetFields()["source"].GetStringValue() != "dash" {
		t.Fatalf("metadata: %v", h.GetMetadata())
	}
	if h.DeclaredSize == nil {
		t.Fatal("declared_size must be present")
	}
}

func TestHeaderErrors(t *testing.T) {
	cases := []struct {
		kv     []string
		status int
		reason vidscanv1.ErrorReason
		field  string
	}{
		{[]string{"metadata", `[1,2]`}, 400, vidscanv1.ErrorReason_INVALID_FIELD, "metadata"},
		{[]string{"metadata", `{"a":`}, 400, vidscanv1.ErrorReason_INVALID_FIELD, "metadata"},
		{[]string{"metadata", `"str"`}, 400, vidscanv1.ErrorReason_INVALID_FIELD, "metadata"},
		{[]string{"size", "-1"}, 400, vidscanv1.ErrorReason_INVALID_FIELD, "size"},
		{[]string{"size", "ten"}, 400, vidscanv1.ErrorReason_INVALID_FIELD, "size"},
		{[]string{"size", "101"}, 413, vidscanv1.ErrorReason_FILE_TOO_LARGE, ""},
		{[]string{"write_offset", "x"}, 400, vidscanv1.ErrorReason_INVALID_FIELD, "write_offset"},
	}
	for _, c := range cases {
		_, err := fields(t, c.kv...).Header("s", "f", "", 100)
		if err == nil || err.HTTPStatus != c.status || err.Reason != c.reason || err.Field != c.field {
			t.Errorf("%v: got %+v", c.kv, err)
		}
	}
}

func TestSetRejectsDuplicatesAndBadUTF8(t *testing.T) {
	var f Fields
	if err := f.Set("filename", "a"); err != nil {
		t.Fatal(err)
	}
	if err := f.Set("filename", "b"); err == nil || err.Field != "filename" {
		t.Fatalf("duplicate accepted: %v", err)
	}
	if err := f.Set("model", "\xff"); err == nil {
		t.Fatal("invalid UTF-8 accepted")
	}
	if err := f.Set("whatever", "x"); err != nil {
		t.Fatalf("unknown fields are ignored: %v", err)
	}
	if err := f.Set("whatever", "y"); err != nil {
		t.Fatalf("unknown fields are ignored even twice: %v", err)
	}
}

func TestOrderingErrors(t *testing.T) {
	e := FieldAfterFile("size")
	if e.HTTPStatus != http.StatusBadRequest || e.Field != "size" || !strings.Contains(e.Message, "may follow the file") {
		t.Fatalf("%+v", e)
	}
	if e := FieldAfterFile("file"); !strings.Contains(e.Message, "more than once") {
		t.Fatalf("%+v", e)
	}
	if e := MissingFile(); e.Field != "file" || e.HTTPStatus != 400 {
		t.Fatalf("%+v", e)
	}
	if e := FieldTooLarge("metadata", 10); e.Reason != vidscanv1.ErrorReason_METADATA_TOO_LARGE {
		t.Fatalf("%+v", e)
	}
}

func TestRenderResult(t *testing.T) {
	md, _ := structpb.NewStruct(map[string]any{"k": "v"})
	conf := 0.25
	fake := false
	raw, err := RenderResult(&vidscanv1.UploadResult{
		VideoId: "v1", AnalysisId: "a1", UploadStatus: vidscanv1.UploadStatus_UPLOAD_STATUS_ANALYZED,
		FileSize: 1234567890123, CreatedAt: timestamppb.New(timestamppb.Now().AsTime()),
		DetectionResult: &vidscanv1.Detection{IsFake: false, Confidence: 0.25, FrameScores: []float32{0.5}},
		ConfidenceScore: &conf, IsFake: &fake, Metadata: md,
	})
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	if m["upload_status"] != "analyzed" {
		t.Fatalf("upload_status %v", m["upload_status"])
	}
	if n, ok := m["file_size"].(json.Number); !ok || n.String() != "1234567890123" {
		t.Fatalf("file_size %#v", m["file_size"])
	}
	for _, k := range []string{"video_id", "analysis_id", "redirect_url", "detection_result", "confidence_score", "is_fake", "deduplicated", "uploaded_at"} {
		if _, ok := m[k]; !ok {
			t.Errorf("missing %s in %s", k, raw)
		}
	}
	if v, ok := m["processing_time"]; !ok || v != nil {
		t.Errorf("unset optional processing_time must be null: %s", raw)
	}
	if m["detection_result"].(map[string]any)["is_fake"] != false {
		t.Errorf("detection_result.is_fake must be emitted: %s", raw)
	}

	raw, _ = RenderResult(&vidscanv1.UploadResult{UploadStatus: vidscanv1.UploadStatus_UPLOAD_STATUS_PROCESSING})
	if !strings.Contains(string(raw), `"upload_status":"processing"`) || !strings.Contains(string(raw), `"file_size":0`) {
		t.Fatalf("%s", raw)
	}
	if UploadStatusString(vidscanv1.UploadStatus_UPLOAD_STATUS_ANALYSIS_FAILED) != "analysis_failed" {
		t.Fatal("analysis_failed")
	}
}

func TestLateFieldsMakeTheTrailer(t *testing.T) {
	f := fields(t, "model", "m1")
	for _, kv := range [][2]string{
		{"filename", " late.webm "}, {"content_type", "video/webm"}, {"metadata", `{"a":1}`},
	} {
		if err := f.SetLate(kv[0], kv[1]); err != nil {
			t.Fatalf("SetLate(%s): %v", kv[0], err)
		}
	}
	tr, err := f.Trailer()
	if err != nil {
		t.Fatal(err)
	}
	if tr.GetFilename() != "late.webm" || tr.GetContentType() != "video/webm" ||
		tr.GetMetadata().GetFields()["a"].GetNumberValue() != 1 {
		t.Fatalf("%v", tr)
	}
	// The header, built when the file started, never sees late values.
	var early Fields
	h, _ := early.Header("s", "part.webm", "video/webm", 100)
	if h.GetFilename() != "part.webm" || h.GetMetadata() != nil {
		t.Fatalf("%v", h)
	}
}

func TestTrailerOnlyForLateFields(t *testing.T) {
	f := fields(t, "filename", "early.mp4", "metadata", `{"a":1}`)
	if tr, err := f.Trailer(); tr != nil || err != nil {
		t.Fatalf("fields before the file make no trailer: %v %v", tr, err)
	}
	// An empty late value leaves the header's, as an empty early one does.
	var g Fields
	if err := g.SetLate("filename", "  "); err != nil {
		t.Fatal(err)
	}
	if tr, err := g.Trailer(); tr != nil || err != nil {
		t.Fatalf("empty late field: %v %v", tr, err)
	}
	// Only the late value is sent; presence is what tells the server to replace.
	var h Fields
	if err := h.SetLate("metadata", `{}`); err != nil {
		t.Fatal(err)
	}
	tr, err := h.Trailer()
	if err != nil || tr.GetMetadata() == nil || tr.Filename != nil || tr.ContentType != nil {
		t.Fatalf("%v %v", tr, err)
	}
}

func TestSetLateRefusals(t *testing.T) {
	cases := []struct {
		name, value, field, contains string
	}{
		{"size", "3", "size", "may follow the file"},
		{"model", "m", "model", "may follow the file"},
		{"sha256", "ab", "sha256", "may follow the file"},
		{"write_offset", "0", "write_offset", "may follow the file"},
		{"unknown", "x", "unknown", "may follow the file"},
		{"", "x", "(unnamed part)", "may follow the file"},
		{"file", "x", "file", "more than once"},
		{"filename", "again.mp4", "filename", "more than once"}, // also given before the file
		{"metadata", "\xff", "metadata", "UTF-8"},
	}
	for _, c := range cases {
		f := fields(t, "filename", "early.mp4")
		err := f.SetLate(c.name, c.value)
		if err == nil || err.Reason != vidscanv1.ErrorReason_INVALID_FIELD || err.Field != c.field ||
			!strings.Contains(err.Message, c.contains) {
			t.Errorf("SetLate(%q): %+v", c.name, err)
		}
	}
	f := fields(t)
	if err := f.SetLate("metadata", "[1]"); err != nil {
		t.Fatal(err) // parsed when the trailer is built, like the header's
	}
	if _, err := f.Trailer(); err == nil || err.Field != "metadata" || err.Reason != vidscanv1.ErrorReason_INVALID_FIELD {
		t.Fatalf("%+v", err)
	}
	if err := f.SetLate("metadata", "{}"); err == nil || !strings.Contains(err.Message, "more than once") {
		t.Fatalf("late field twice: %+v", err)
	}
}
