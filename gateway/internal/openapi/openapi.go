// Package openapi adapts the OpenAPI v2 document that protoc-gen-openapiv2 generates
// (embedded into the binary) to what the gateway actually serves:
//   - the hand-written multipart route POST /v1/dashboard/upload/{session_id} is added
//     (the generator renders the unannotated UploadVideo under a placeholder gRPC path
//     only so that UploadResult is in `definitions`; that path is removed),
//   - every vidscan message and enum is described in the REST shape the gateway
//     writes (internal/restjson): 64-bit integers as integers, enums as their
//     lower-case names, unset message/optional fields nullable (x-nullable),
//   - the content route GET/HEAD /v1/videos/{video_id}/content is described,
//   - DELETE /v1/dashboard/upload/{session_id} answers 204 without a body,
//   - every error response is the REST error body (ErrorResponse), not google.rpc.Status,
//   - the bearer token is declared.
package openapi

import (
	"encoding/json"
	"fmt"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	_ "github.com/vidscan/vidscan/gateway/gen/vidscan/v1" // registers the descriptors
	"github.com/vidscan/vidscan/gateway/internal/restjson"
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
	// Methods without an HTTP binding are rendered under their gRPC path; the gateway
	// serves the streaming ones on routes of its own (documented below), none as-is.
	for path := range paths {
		if strings.HasPrefix(path, "/vidscan.v1.") {
			delete(paths, path)
		}
	}
	for name := range defs {
		if strings.HasPrefix(name, "StreamResultOf") { // the streams' envelopes
			delete(defs, name)
		}
	}
	for _, name := range []string{"ReadVideoContentRequest", "ReadVideoContentResponse", "ContentInfo"} {
		delete(defs, name)
	}
	for _, name := range []string{"UploadVideoRequest", "UploadVideoResponse", "UploadHeader", "UploadTrailer", "UploadStatus"} {
		delete(defs, name)
	}

	restShapes(defs)
	restQueryEnums(paths)
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
	obj(paths, "/v1/analyses/{analysis_id}/events")["get"] = eventsOperation()

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

// restShapes rewrites the definitions of vidscan's messages and enums to the shape
// internal/restjson writes, from the same descriptors.
func restShapes(defs map[string]any) {
	for name, d := range defs {
		def := asObj(d)
		desc, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName("vidscan.v1." + name))
		if err != nil || def == nil {
			continue
		}
		switch desc := desc.(type) {
		case protoreflect.EnumDescriptor:
			def["enum"] = enumValues(desc)
			delete(def, "default")
			def["x-nullable"] = true
		case protoreflect.MessageDescriptor:
			props := obj(def, "properties")
			fields := desc.Fields()
			for i := 0; i < fields.Len(); i++ {
				fd := fields.Get(i)
				name := string(fd.Name())
				if p, ok := props[name].(map[string]any); ok {
					props[name] = restField(fd, p)
				}
			}
		}
	}
}

// restQueryEnums gives enum query parameters the REST spellings they accept
// (restjson.QueryParser), e.g. analysis_status=analyzed.
func restQueryEnums(paths map[string]any) {
	spelling := map[string]any{}
	protoregistry.GlobalTypes.RangeEnums(func(et protoreflect.EnumType) bool {
		ed := et.Descriptor()
		if ed.ParentFile().Package() == "vidscan.v1" {
			for i := 0; i < ed.Values().Len(); i++ {
				vd := ed.Values().Get(i)
				spelling[string(vd.Name())] = nil // UNSPECIFIED: left out
				if vd.Number() != 0 {
					spelling[string(vd.Name())] = restjson.EnumString(ed, vd)
				}
			}
		}
		return true
	})
	for _, item := range paths {
		for _, op := range asObj(item) {
			params, _ := asObj(op)["parameters"].([]any)
			for _, param := range params {
				p := asObj(param)
				values, ok := p["enum"].([]any)
				if !ok {
					continue
				}
				var rest []any
				for _, v := range values {
					if name, ok := v.(string); ok {
						if r, known := spelling[name]; known {
							if r != nil {
								rest = append(rest, r)
							}
							continue
						}
					}
					rest = append(rest, v)
				}
				p["enum"] = rest
				delete(p, "default")
			}
		}
	}
}

func enumValues(ed protoreflect.EnumDescriptor) []any {
	var values []any
	for i := 0; i < ed.Values().Len(); i++ {
		if vd := ed.Values().Get(i); vd.Number() != 0 {
			values = append(values, restjson.EnumString(ed, vd))
		}
	}
	return values
}

// restField is one property as restjson writes the field.
func restField(fd protoreflect.FieldDescriptor, p map[string]any) map[string]any {
	scalar := func(s map[string]any) map[string]any {
		switch fd.Kind() {
		case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind,
			protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
			s["type"] = "integer"
		case protoreflect.EnumKind:
			delete(s, "$ref")
			s["type"] = "string"
			s["enum"] = enumValues(fd.Enum())
			s["x-nullable"] = true // the zero (UNSPECIFIED) value
		}
		return s
	}
	if fd.IsList() {
		if items, ok := p["items"].(map[string]any); ok {
			p["items"] = scalar(items)
		}
		return p
	}
	if fd.IsMap() {
		return p
	}
	p = scalar(p)
	if fd.HasPresence() {
		if ref, ok := p["$ref"]; ok { // Swagger 2 ignores siblings of $ref
			delete(p, "$ref")
			p["allOf"] = []any{map[string]any{"$ref": ref}}
		}
		p["x-nullable"] = true
	}
	return p
}

// eventsOperation describes the Server-Sent Events route (internal/events).
func eventsOperation() map[string]any {
	return map[string]any{
		"operationId": "AnalysisService_WatchAnalysis",
		"tags":        []any{"AnalysisService"},
		"summary":     "The analysis as it changes, as Server-Sent Events, until it is final.",
		"description": "`event: analysis` with `data:` the Analysis (the same JSON as GET /v1/analyses/{analysis_id}) " +
			"at once and after each change; the stream ends after ANALYZED or FAILED. `: keepalive` comments keep " +
			"idle connections open; a failure after the first event is an `event: error` with the error body.",
		"produces": []any{"text/event-stream"},
		"parameters": []any{
			map[string]any{"name": "analysis_id", "in": "path", "required": true, "type": "string"},
		},
		"responses": map[string]any{
			"200": map[string]any{"description": "An event stream of Analysis messages."},
			"default": map[string]any{
				"description": "An error before the first event (gRPC status mapped to HTTP).",
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
