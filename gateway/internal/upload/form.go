package upload

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	vidscanv1 "github.com/vidscan/vidscan/gateway/gen/vidscan/v1"
)

// The multipart form of POST /v1/dashboard/upload/{session_id}.
const (
	FieldFile        = "file"         // the video bytes; must be the LAST part
	FieldFilename    = "filename"     // display name; default: the file part's filename
	FieldContentType = "content_type" // default: the file part's Content-Type
	FieldMetadata    = "metadata"     // a JSON object -> google.protobuf.Struct
	FieldModel       = "model"        // detection model; empty = server default
	FieldSHA256      = "sha256"       // hex SHA-256 of the file -> declared_sha256
	FieldSize        = "size"         // byte size of the file -> declared_size
	FieldWriteOffset = "write_offset" // resume offset (must equal the session's committed_bytes)
)

var knownFields = map[string]bool{
	FieldFilename: true, FieldContentType: true, FieldMetadata: true, FieldModel: true,
	FieldSHA256: true, FieldSize: true, FieldWriteOffset: true,
}

// IsKnownField reports whether name is a text field the gateway maps into the
// UploadHeader. Other text fields are read and ignored.
func IsKnownField(name string) bool { return knownFields[name] }

// FormError is a problem with the form that the gateway answers itself.
type FormError struct {
	HTTPStatus int
	Code       codes.Code
	Reason     vidscanv1.ErrorReason // sent as its name in ErrorInfo.reason, e.g. INVALID_FIELD
	Field      string                // the offending form field, "" when none
	Message    string
	Metadata   map[string]string
}

func (e *FormError) Error() string { return e.Message }

func invalidField(field, format string, args ...any) *FormError {
	return &FormError{
		HTTPStatus: http.StatusBadRequest,
		Code:       codes.InvalidArgument,
		Reason:     vidscanv1.ErrorReason_INVALID_FIELD,
		Field:      field,
		Message:    field + ": " + fmt.Sprintf(format, args...),
	}
}

// TooLarge is the 413 answered when the file (declared or counted) exceeds maxBytes.
func TooLarge(maxBytes int64, what string) *FormError {
	return &FormError{
		HTTPStatus: http.StatusRequestEntityTooLarge,
		Code:       codes.InvalidArgument,
		Reason:     vidscanv1.ErrorReason_FILE_TOO_LARGE,
		Message:    fmt.Sprintf("%s is larger than the upload limit of %d bytes", what, maxBytes),
		Metadata:   map[string]string{"max_bytes": strconv.FormatInt(maxBytes, 10)},
	}
}

// Fields collects the text fields that precede the file part.
type Fields struct {
	values map[string]string
}

// Set records one text field. A known field given twice, or a value that is not
// UTF-8, is refused; unknown fields are ignored.
func (f *Fields) Set(name, value string) *FormError {
	if !IsKnownField(name) {
		return nil
	}
	if f.values == nil {
		f.values = map[string]string{}
	}
	if _, dup := f.values[name]; dup {
		return invalidField(name, "given more than once")
	}
	if !utf8.ValidString(value) {
		return invalidField(name, "is not valid UTF-8")
	}
	f.values[name] = value
	return nil
}

// Get returns a field's trimmed value ("" when absent) and whether it was present.
func (f *Fields) Get(name string) (string, bool) {
	v, ok := f.values[name]
	return strings.TrimSpace(v), ok
}

// Header builds the stream's UploadHeader from the collected fields and the file
// part's own filename and Content-Type (used when the fields do not override them).
// A declared size above maxBytes answers 413 before any byte is forwarded.
func (f *Fields) Header(sessionID, partFilename, partContentType string, maxBytes int64) (*vidscanv1.UploadHeader, *FormError) {
	h := &vidscanv1.UploadHeader{SessionId: sessionID}

	h.Filename = partFilename
	if v, ok := f.Get(FieldFilename); ok && v != "" {
		h.Filename = v
	}
	if !utf8.ValidString(h.Filename) {
		return nil, invalidField(FieldFilename, "is not valid UTF-8")
	}
	h.ContentType = strings.TrimSpace(partContentType)
	if v, ok := f.Get(FieldContentType); ok && v != "" {
		h.ContentType = v
	}
	if !utf8.ValidString(h.ContentType) {
		return nil, invalidField(FieldContentType, "is not valid UTF-8")
	}
	h.Model, _ = f.Get(FieldModel)
	if v, _ := f.Get(FieldSHA256); v != "" {
		h.DeclaredSha256 = strings.ToLower(v)
	}
	if v, _ := f.Get(FieldMetadata); v != "" {
		md, err := ParseMetadata(v)
		if err != nil {
			return nil, err
		}
		h.Metadata = md
	}
	if v, _ := f.Get(FieldSize); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return nil, invalidField(FieldSize, "must be a non-negative integer number of bytes, got %q", v)
		}
		if n > maxBytes {
			return nil, TooLarge(maxBytes, fmt.Sprintf("the declared size %d", n))
		}
		h.DeclaredSize = &n
	}
	if v, _ := f.Get(FieldWriteOffset); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return nil, invalidField(FieldWriteOffset, "must be a non-negative integer, got %q", v)
		}
		h.WriteOffset = n
	}
	return h, nil
}

// ParseMetadata parses the `metadata` field: a JSON object, mapped to a Struct.
func ParseMetadata(v string) (*structpb.Struct, *FormError) {
	trimmed := bytes.TrimSpace([]byte(v))
	if len(trimmed) == 0 || trimmed[0] != '{' || !json.Valid(trimmed) {
		return nil, invalidField(FieldMetadata, "must be a JSON object")
	}
	s := &structpb.Struct{}
	if err := protojson.Unmarshal(trimmed, s); err != nil {
		return nil, invalidField(FieldMetadata, "must be a JSON object: %v", err)
	}
	return s, nil
}

// FieldAfterFile is the 400 answered for any part that follows the file part: the
// UploadHeader has already been sent by then, so such a field could not take effect.
func FieldAfterFile(name string) *FormError {
	if name == "" {
		name = "(unnamed part)"
	}
	e := invalidField(name, "comes after the %q part; send every form field before the file", FieldFile)
	if name == FieldFile {
		e = invalidField(FieldFile, "given more than once; one upload carries one file")
	}
	return e
}

// MissingFile is the 400 answered for a form that has no file part.
func MissingFile() *FormError {
	return invalidField(FieldFile, "is required: the form must end with a file part named %q", FieldFile)
}

// FieldTooLarge is the 400 answered for a text field longer than limit bytes.
func FieldTooLarge(name string, limit int64) *FormError {
	e := invalidField(name, "is longer than %d bytes", limit)
	if name == FieldMetadata {
		e.Reason = vidscanv1.ErrorReason_METADATA_TOO_LARGE
	}
	return e
}
