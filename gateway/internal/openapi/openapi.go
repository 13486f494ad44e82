// Package openapi adapts the OpenAPI v2 document that protoc-gen-openapiv2 generates
// (embedded into the binary) to what the gateway actually serves:
//   - the hand-written multipart route POST /v1/dashboard/upload/{session_id} is added
//     (the generator renders the unannotated UploadVideo under a placeholder gRPC path
//     only so that UploadResult is in `definitions`; that path is removed),
//   - UploadResult.upload_status is the lower-case string, file_size a number,
//   - DELETE /v1/dashboard/upload/{session_id} answers 204 without a body,
//   - every error response is the REST error body (ErrorResponse), not google.rpc.Status,
//   - the bearer token is declared.
package openapi

import (
	"encoding/json"
	"fmt"
)

const (
	uploadPath      = "/v1/dashboard/upload/{session_id}"
	placeholderPath = "/vidscan.v1.UploadService/UploadVideo"
)

// Patch returns the served document built from the generated one.
func Patch(generated []byte, maxUploadBytes int64) ([]byte, error) {
	var doc map[string]any
	if err := json.Unmarshal(generated, &doc); err != nil {
		return nil, fmt.Errorf("openapi: generated document: %w", err)
	}
	info := obj(doc, "info")
	info["title"] = "vidscan REST API"
	info["version"] = "v1"
	info["description"] = "REST gateway (grpc-gateway v2) in front of the vidscan gRPC API. " +
		"Errors answer the ErrorResponse body; JSON uses proto field names."

	paths := obj(doc, "paths")
	defs := obj(doc, "definitions")
	delete(paths, placeholderPath)
	// ContentService has no HTTP binding of its own: the gateway's content route
	// (internal/content) serves it as bytes, documented below.
	delete(paths, "/vidscan.v1.ContentService/ReadVideoContent")
	for _, name := range []string{"ReadVideoContentRequest", "ReadVideoContentResponse", "ContentInfo"} {
		delete(defs, name)
	}
	for _, name := range []string{"UploadVideoRequest", "UploadVideoResponse", "UploadHeader", "UploadTrailer", "UploadStatus"} {
		delete(defs, name)
	}

	if res, ok := defs["UploadResult"].(map[string]any); ok {
		props := obj(res, "properties")
		props["upload_status"] = map[string]any{
			"type":        "string",
			"enum":        []any{"analyzed", "processing", "analysis_failed"},
			"description": "analyzed: detection_result is filled; processing: poll GET /v1/analyses/{analysis_id}; analysis_failed: stored, analysis failed for good.",
		}
		props["file_size"] = map[string]any{"type": "integer", "format": "int64"}
	}
	defs["ErrorResponse"] = errorResponseSchema()

	// Every error response is the REST error body.
	for _, item := range paths {
		for _, op := range asObj(item) {
			responses := obj(asObj(op), "responses")
			responses["default"] = map[string]any{
				"description": "An error (gRPC status mapped to HTTP).",
				"schema":      ref("ErrorResponse"),
			}
		}
	}
	delete(defs, "Status")
	delete(defs, "Any")

	item := obj(paths, uploadPath)
	if del, ok := item["delete"].(map[string]any); ok {
		responses := obj(del, "responses")
		delete(responses, "200")
		responses["204"] = map[string]any{"description": "Cancelled; no body."}
	}
	item["post"] = uploadOperation(maxUploadBytes)
	contentItem := obj(paths, contentPath)
	contentItem["get"] = contentOperation("get")
	contentItem["head"] = contentOperation("head")

	doc["securityDefinitions"] = map[string]any{
		"bearer": map[string]any{
			"type": "apiKey", "name": "Authorization", "in": "header",
			"description": "Bearer JWT: `Authorization: Bearer <token>`.",
		},
	}
	doc["security"] = []any{map[string]any{"bearer": []any{}}}
	return json.Marshal(doc)
}

func uploadOperation(maxUploadBytes int64) map[string]any {
	formField := func(name, typ, desc string) map[string]any {
		return map[string]any{"name": name, "in": "formData", "type": typ, "required": false, "description": desc}
	}
	size := formField("size", "integer", "Byte size of the file; the upload fails with SIZE_MISMATCH when it differs.")
	size["format"] = "int64"
	offset := formField("write_offset", "integer", "Resume offset; must equal the session's committed_bytes.")
	offset["format"] = "int64"
	return map[string]any{
		"operationId": "UploadService_UploadVideo",
		"tags":        []any{"UploadService"},
		"summary":     "Streams one video into a session (multipart/form-data).",
		"description": fmt.Sprintf("Text fields and one part named `file`, in any order: fields before the file "+
			"start the stream; `filename`, `content_type` and `metadata` may also follow the file (sent with the "+
			"stream's last message); other fields after the file answer 400 INVALID_FIELD. Unknown fields before "+
			"the file are ignored. The file is forwarded in chunks as it arrives (never buffered). "+
			"Files over %d bytes answer 413 FILE_TOO_LARGE.", maxUploadBytes),
		"consumes": []any{"multipart/form-data"},
		"produces": []any{"application/json"},
		"parameters": []any{
			map[string]any{"name": "session_id", "in": "path", "required": true, "type": "string"},
			formField("filename", "string", "Display name; defaults to the file part's filename."),
			formField("content_type", "string", "Defaults to the file part's Content-Type."),
			formField("metadata", "string", "A JSON object stored with the video."),
			formField("model", "string", "Detection model; empty selects the server's default."),
			formField("sha256", "string", "Hex SHA-256 of the file; the upload fails with HASH_MISMATCH when it differs."),
			size,
			offset,
			map[string]any{"name": "file", "in": "formData", "type": "file", "required": true,
				"description": "The video."},
		},
		"responses": map[string]any{
			"201": map[string]any{"description": "Stored (and analysed, or analysing).", "schema": ref("UploadResult"),
				"headers": map[string]any{"Location": map[string]any{"type": "string", "description": "/v1/videos/{video_id}"}}},
			"413": map[string]any{"description": "FILE_TOO_LARGE", "schema": ref("ErrorResponse")},
			"default": map[string]any{
				"description": "An error (gRPC status mapped to HTTP).",
				"schema":      ref("ErrorResponse"),
			},
		},
	}
}

const contentPath = "/v1/videos/{video_id}/content"

func contentOperation(method string) map[string]any {
	query := func(name, typ, desc string) map[string]any {
		return map[string]any{"name": name, "in": "query", "type": typ, "required": false, "description": desc}
	}
	expires := query("expires", "integer", "Signed link: expiry (Unix seconds).")
	expires["format"] = "int64"
	ranged := map[string]any{
		"Content-Range": map[string]any{"type": "string", "description": "bytes START-END/TOTAL"},
		"Accept-Ranges": map[string]any{"type": "string"},
		"ETag":          map[string]any{"type": "string", "description": "the file's SHA-256"},
	}
	summary := "The video's bytes, whole or one HTTP byte range (playable in a <video> element)."
	if method == "head" {
		summary = "The video's headers (Content-Length, Content-Type, ETag), no body."
	}
	return map[string]any{
		"operationId": "ContentService_ReadVideoContent_" + method,
		"tags":        []any{"ContentService"},
		"summary":     summary,
		"description": "Authorization: the bearer token, or the signed `user`, `expires`, `signature` query " +
			"parameters of the video's `s3_url` (the embedded store's playable URL). One range per request " +
			"(`Range: bytes=A-B`, `bytes=A-`, `bytes=-N`); several ranges answer the whole file.",
		"produces": []any{"video/mp4", "video/quicktime", "video/webm", "video/x-matroska", "video/x-msvideo"},
		"parameters": []any{
			map[string]any{"name": "video_id", "in": "path", "required": true, "type": "string"},
			map[string]any{"name": "Range", "in": "header", "required": false, "type": "string"},
			query("user", "string", "Signed link: the user it was given to."),
			expires,
			query("signature", "string", "Signed link: hex HMAC-SHA256."),
		},
		"responses": map[string]any{
			"200": map[string]any{"description": "The whole file (the body is the video bytes).", "headers": ranged},
			"206": map[string]any{"description": "The requested range (the body is those bytes).", "headers": ranged},
			"416": map[string]any{"description": "RANGE_NOT_SATISFIABLE", "schema": ref("ErrorResponse")},
			"default": map[string]any{
				"description": "An error (gRPC status mapped to HTTP).",
				"schema":      ref("ErrorResponse"),
			},
		},
	}
}

func errorResponseSchema() map[string]any {
	boolean := map[string]any{"type": "boolean"}
	return map[string]any{
		"type": "object",
		"properties": map[string]any{
			"error_code":        map[string]any{"type": "string", "description": "google.rpc.ErrorInfo.reason (e.g. SESSION_NOT_FOUND), else the gRPC code name."},
			"error_message":     map[string]any{"type": "string"},
			"details":           map[string]any{"type": "object", "description": "ErrorInfo.metadata, plus field_violations [{field, description}], quota_violations [{subject, description}], retry_after_seconds when present."},
			"cleanup_performed": boolean,
			"cleanup_details": map[string]any{"type": "object", "properties": map[string]any{
				"s3_cleanup": boolean, "session_cleanup": boolean, "database_cleanup": boolean, "quota_released": boolean,
			}},
			"timestamp": map[string]any{"type": "string", "format": "date-time"},
		},
		"required": []any{"error_code", "error_message", "details", "cleanup_performed", "cleanup_details", "timestamp"},
	}
}

func ref(name string) map[string]any { return map[string]any{"$ref": "#/definitions/" + name} }

func asObj(v any) map[string]any {
	m, _ := v.(map[string]any)
	if m == nil {
		return map[string]any{}
	}
	return m
}

// obj returns m[key] as an object, creating it when missing.
func obj(m map[string]any, key string) map[string]any {
	if v, ok := m[key].(map[string]any); ok {
		return v
	}
	v := map[string]any{}
	m[key] = v
	return v
}
