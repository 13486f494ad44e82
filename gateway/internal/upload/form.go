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
	FieldFile        = "file"         // the video bytes; one part, streamed as it arrives
	FieldFilename    = "filename"     // display name; default: the file part's filename
	FieldContentType = "content_type" // default: the file part's Content-Type
	FieldMetadata    = "metadata"     // a JSON object -> google.protobuf.Struct
	FieldModel       = "model"        // detection model; empty = server default
	FieldSHA256      = "sha256"       // hex SHA-256 of the file -> declared_sha256
	FieldSize        = "size"         // byte size of the file -> declared_size
	FieldWriteOffset = "write_offset" // resume offset (must equal the session's committed_bytes)
	FieldCallbackURL = "callback_url" // webhook for the final analysis; checked before the bytes
)

var knownFields = map[string]bool{
	FieldFilename: true, FieldContentType: true, FieldMetadata: true, FieldModel: true,
	FieldSHA256: true, FieldSize: true, FieldWriteOffset: true, FieldCallbackURL: true,
}

// lateFields may follow the file part: the server applies them only when it records
// the video, so they travel on the last message (UploadTrailer). The others shape how
// the bytes are received and must come before the file.
var lateFields = map[string]bool{FieldFilename: true, FieldContentType: true, FieldMetadata: true}

// IsKnownField reports whether name is a text field the gateway maps into the
// UploadHeader. Other text fields are read and ignored.
func IsKnownField(name string) bool { return knownFields[name] }

// IsLateField reports whether name may follow the file part (into the UploadTrailer).
func IsLateField(name string) bool { return lateFields[name] }

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

// Fields collects the form's text fields: those before the file part (Set) make the
// UploadHeader, those after it (SetLate) the UploadTrailer. Each known field is kept
// once, at most MaxFieldBytes long (the handler's bound), so memory stays bounded
// whichever side of the file a field is on.
type Fields struct {
	values map[string]string
	late   map[string]bool // names set after the file part
}

// Set records one text field that precedes the file. A known field given twice
// (before or after the file), or a value that is not UTF-8, is refused; unknown
// fields are ignored.
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

// SetLate records a text field that follows the file part. Only the late fields
// (filename, content_type, metadata) may; any other part there, unknown ones included,
// is refused with FieldAfterFile, as is a field already given before the file.
func (f *Fields) SetLate(name, value string) *FormError {
	if !IsLateField(name) {
		return FieldAfterFile(name)
	}
	if err := f.Set(name, value); err != nil {
		return err
	}
	if f.late == nil {
		f.late = map[string]bool{}
	}
	f.late[name] = true
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
	h.CallbackUrl, _ = f.Get(FieldCallbackURL)
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

// Trailer builds the UploadTrailer of the last message from the fields that followed
// the file part; nil when none did. As in the header, an empty filename or
// content_type leaves the value the stream already has.
func (f *Fields) Trailer() (*vidscanv1.UploadTrailer, *FormError) {
	if len(f.late) == 0 {
		return nil, nil
	}
	t := &vidscanv1.UploadTrailer{}
	set := false
	if v, _ := f.Get(FieldFilename); f.late[FieldFilename] && v != "" {
		t.Filename, set = &v, true
	}
	if v, _ := f.Get(FieldContentType); f.late[FieldContentType] && v != "" {
		t.ContentType, set = &v, true
	}
	if v, _ := f.Get(FieldMetadata); f.late[FieldMetadata] && v != "" {
		md, err := ParseMetadata(v)
		if err != nil {
			return nil, err
		}
		t.Metadata, set = md, true
	}
	if !set {
		return nil, nil
	}
	return t, nil
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

// FieldAfterFile is the 400 answered for a part after the file part that cannot take
// effect there: a second file, or a field other than filename, content_type and
// metadata (the UploadHeader, sent when the file started, needed it).
func FieldAfterFile(name string) *FormError {
	if name == "" {
		name = "(unnamed part)"
	}
	e := invalidField(name, "comes after the %q part; only %s, %s and %s may follow the file",
		FieldFile, FieldFilename, FieldContentType, FieldMetadata)
	if name == FieldFile {
		e = invalidField(FieldFile, "given more than once; one upload carries one file")
	}
	return e
}

// MissingFile is the 400 answered for a form that has no file part.
func MissingFile() *FormError {
	return invalidField(FieldFile, "is required: the form must have a file part named %q", FieldFile)
}

// FieldTooLarge is the 400 answered for a text field longer than limit bytes.
func FieldTooLarge(name string, limit int64) *FormError {
	e := invalidField(name, "is longer than %d bytes", limit)
	if name == FieldMetadata {
		e.Reason = vidscanv1.ErrorReason_METADATA_TOO_LARGE
	}
	return e
}
