package upload

import (
	"google.golang.org/protobuf/reflect/protoreflect"

	vidscanv1 "github.com/vidscan/vidscan/gateway/gen/vidscan/v1"
	"github.com/vidscan/vidscan/gateway/internal/restjson"
)

// UploadStatusString is the earlier API's lower-case spelling of an UploadStatus:
// UPLOAD_STATUS_ANALYZED -> "analyzed", UPLOAD_STATUS_PROCESSING -> "processing",
// UPLOAD_STATUS_ANALYSIS_FAILED -> "analysis_failed" (for logs; "" for UNSPECIFIED).
func UploadStatusString(s vidscanv1.UploadStatus) string {
	ed := s.Descriptor()
	if vd := ed.Values().ByNumber(protoreflect.EnumNumber(s)); vd != nil && s != 0 {
		return restjson.EnumString(ed, vd)
	}
	return ""
}

// RenderResult is the 201 body of the upload route: the UploadResult in the REST
// shape of every route (internal/restjson): every field present, null while unknown
// (confidence_score, is_fake, processing_time, detection_result while processing).
func RenderResult(res *vidscanv1.UploadResult) ([]byte, error) {
	return restjson.Marshal(res)
}
