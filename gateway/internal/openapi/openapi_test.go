package openapi

import (
	"encoding/json"
	"testing"

	"github.com/vidscan/vidscan/gateway"
)

func TestPatch(t *testing.T) {
	raw, err := Patch(gateway.OpenAPIv2, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Swagger     string                               `json:"swagger"`
		Paths       map[string]map[string]map[string]any `json:"paths"`
		Definitions map[string]map[string]any            `json:"definitions"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Swagger != "2.0" {
		t.Fatal(doc.Swagger)
	}
	if _, ok := doc.Paths[placeholderPath]; ok {
		t.Fatal("placeholder path left in")
	}
	item := doc.Paths[uploadPath]
	if item["post"]["operationId"] != "UploadService_UploadVideo" {
		t.Fatalf("%v", item["post"])
	}
	if _, ok := item["delete"]["responses"].(map[string]any)["204"]; !ok {
		t.Fatalf("delete: %v", item["delete"])
	}
	for _, p := range []string{"/v1/dashboard/upload/sessions", "/v1/dashboard/upload/{session_id}/status", "/v1/videos/{video_id}", "/v1/analyses/{analysis_id}"} {
		if _, ok := doc.Paths[p]; !ok {
			t.Errorf("missing %s", p)
		}
	}
	for _, d := range []string{"UploadResult", "ErrorResponse", "Video", "Analysis", "UploadSession"} {
		if _, ok := doc.Definitions[d]; !ok {
			t.Errorf("missing definition %s", d)
		}
	}
	us := doc.Definitions["UploadResult"]["properties"].(map[string]any)["upload_status"].(map[string]any)
	if us["type"] != "string" || us["enum"].([]any)[0] != "analyzed" {
		t.Fatalf("upload_status: %v", us)
	}
	// Every $ref must resolve.
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if r, ok := v["$ref"].(string); ok {
				if _, ok := doc.Definitions[r[len("#/definitions/"):]]; !ok {
					t.Errorf("dangling %s", r)
				}
			}
			for _, x := range v {
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	var all any
	_ = json.Unmarshal(raw, &all)
	walk(all)
}
