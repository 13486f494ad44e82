package upload

import (
	"bytes"
	"encoding/json"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"

	vidscanv1 "github.com/vidscan/vidscan/gateway/gen/vidscan/v1"
)

// UploadStatusString is the earlier API's lower-case spelling of an UploadStatus:
// UPLOAD_STATUS_ANALYZED -> "analyzed", UPLOAD_STATUS_PROCESSING -> "processing",
// UPLOAD_STATUS_ANALYSIS_FAILED -> "analysis_failed" (UNSPECIFIED -> "unspecified").
func UploadStatusString(s vidscanv1.UploadStatus) string {
	name := s.String() // the number itself for values this build does not know
	return strings.ToLower(strings.TrimPrefix(name, "UPLOAD_STATUS_"))
}

var resultJSON = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

// RenderResult is the 201 body of the upload route: the UploadResult as protojson with
// proto field names and unpopulated fields (unset `optional` fields such as
// confidence_score stay absent while processing), except that
//   - upload_status is the lower-case string of UploadStatusString, and
//   - file_size is a JSON number (protojson writes int64 as a string).
//
// Keys come out sorted.
func RenderResult(res *vidscanv1.UploadResult) ([]byte, error) {
	raw, err := resultJSON.Marshal(res)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	m["upload_status"] = UploadStatusString(res.GetUploadStatus())
	if s, ok := m["file_size"].(string); ok {
		m["file_size"] = json.Number(s)
	}
	return json.Marshal(m)
}
