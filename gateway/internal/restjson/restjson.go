// Package restjson is the one JSON shape of every REST route (the earlier REST API's,
// ../shared/spec/work-order-60.md), written from the proto messages:
//
//   - proto field names (file_size, not fileSize);
//   - every field present: an unset message or `optional` field, or an unset oneof
//     member, is null; an empty list is []; an empty map is {};
//   - 64-bit integers are JSON numbers (protojson writes them as strings);
//   - enums are the lower-case value names without the type's prefix, as the
//     earlier API spelled them (UPLOAD_SESSION_STATE_ACTIVE -> "active",
//     ANALYSIS_STATUS_ANALYZED -> "analyzed"); the zero UNSPECIFIED value is null;
//   - well-known types as protojson writes them (Timestamp as RFC 3339, Struct as
//     an object, ...).
//
// Requests are still read by protojson (which accepts numbers for 64-bit fields).
// internal/openapi rewrites the OpenAPI document to describe exactly this shape, and
// tests/test_rest_shapes.py checks every route's responses against that document.
package restjson

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/url"
	"strconv"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/grpc-ecosystem/grpc-gateway/v2/utilities"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

var wellKnown = protojson.MarshalOptions{UseProtoNames: true}

// Marshal renders m in the REST shape.
func Marshal(m proto.Message) ([]byte, error) {
	v, err := Value(m.ProtoReflect())
	if err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

// Value is m in the REST shape as a JSON-marshalable tree.
func Value(m protoreflect.Message) (any, error) {
	if strings.HasPrefix(string(m.Descriptor().FullName()), "google.protobuf.") {
		raw, err := wellKnown.Marshal(m.Interface())
		if err != nil {
			return nil, err
		}
		return json.RawMessage(raw), nil
	}
	out := make(map[string]any)
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		name := string(fd.Name())
		switch {
		case fd.IsList():
			list := m.Get(fd).List()
			items := make([]any, 0, list.Len())
			for j := 0; j < list.Len(); j++ {
				item, err := single(fd, list.Get(j))
				if err != nil {
					return nil, err
				}
				items = append(items, item)
			}
			out[name] = items
		case fd.IsMap():
			entries := make(map[string]any)
			var err error
			m.Get(fd).Map().Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
				var item any
				item, err = single(fd.MapValue(), v)
				entries[k.String()] = item
				return err == nil
			})
			if err != nil {
				return nil, err
			}
			out[name] = entries
		case fd.HasPresence() && !m.Has(fd):
			out[name] = nil
		default:
			item, err := single(fd, m.Get(fd))
			if err != nil {
				return nil, err
			}
			out[name] = item
		}
	}
	return out, nil
}

func single(fd protoreflect.FieldDescriptor, v protoreflect.Value) (any, error) {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return Value(v.Message())
	case protoreflect.EnumKind:
		return EnumValue(fd.Enum(), v.Enum()), nil
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return json.Number(strconv.FormatInt(v.Int(), 10)), nil
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return json.Number(strconv.FormatUint(v.Uint(), 10)), nil
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		f := v.Float()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, nil // not a JSON number
		}
		return f, nil
	case protoreflect.BytesKind:
		return base64.StdEncoding.EncodeToString(v.Bytes()), nil
	default: // bool, string, 32-bit integers
		return v.Interface(), nil
	}
}

// EnumValue is the REST spelling of one enum value: nil for the zero value (and
// google.protobuf.NullValue), else EnumString.
func EnumValue(ed protoreflect.EnumDescriptor, n protoreflect.EnumNumber) any {
	if n == 0 {
		return nil
	}
	if vd := ed.Values().ByNumber(n); vd != nil {
		return EnumString(ed, vd)
	}
	return int32(n) // a value this build does not know: its number
}

// EnumString is a value's name, lower-case, without the enum type's prefix:
// UploadStatus UPLOAD_STATUS_ANALYSIS_FAILED -> "analysis_failed".
func EnumString(ed protoreflect.EnumDescriptor, vd protoreflect.EnumValueDescriptor) string {
	return strings.ToLower(strings.TrimPrefix(string(vd.Name()), EnumPrefix(ed)))
}

// EnumPrefix is the UPPER_SNAKE_CASE of the enum's name plus "_" (UploadSessionState
// -> "UPLOAD_SESSION_STATE_"), the prefix buf's lint rules put on every value.
func EnumPrefix(ed protoreflect.EnumDescriptor) string {
	var b strings.Builder
	for i, r := range string(ed.Name()) {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String()) + "_"
}

// Marshaler is the grpc-gateway runtime.Marshaler of the REST routes: responses in
// the REST shape, requests read by the embedded JSONPb.
type Marshaler struct {
	runtime.JSONPb
}

// Marshal renders vidscan's messages in the REST shape; anything else (the health
// check behind /healthz, errors) as JSONPb does.
func (m *Marshaler) Marshal(v any) ([]byte, error) {
	if msg, ok := v.(proto.Message); ok && msg.ProtoReflect().Descriptor().ParentFile().Package() == "vidscan.v1" {
		return Marshal(msg)
	}
	return m.JSONPb.Marshal(v)
}

// NewEncoder writes each value as Marshal does (server-streaming responses).
func (m *Marshaler) NewEncoder(w io.Writer) runtime.Encoder {
	return runtime.EncoderFunc(func(v any) error {
		buf, err := m.Marshal(v)
		if err != nil {
			return err
		}
		if _, err := w.Write(buf); err != nil {
			return fmt.Errorf("restjson: %w", err)
		}
		_, err = w.Write(m.Delimiter())
		return err
	})
}

// QueryParser reads query parameters as grpc-gateway does, and also accepts an
// enum's REST spelling ("analyzed" for ANALYSIS_STATUS_ANALYZED), so a client uses
// the same words in a query as it reads in the responses.
type QueryParser struct {
	runtime.DefaultQueryParser
}

// Parse rewrites REST enum spellings to their value names, then parses.
func (p *QueryParser) Parse(msg proto.Message, values url.Values, filter *utilities.DoubleArray) error {
	md := msg.ProtoReflect().Descriptor()
	for key, given := range values {
		fd := fieldAt(md, strings.Split(key, "."))
		if fd == nil || fd.Kind() != protoreflect.EnumKind {
			continue
		}
		ed := fd.Enum()
		for i, v := range given {
			for j := 0; j < ed.Values().Len(); j++ {
				vd := ed.Values().Get(j)
				if vd.Number() != 0 && v == EnumString(ed, vd) {
					given[i] = string(vd.Name())
				}
			}
		}
	}
	return p.DefaultQueryParser.Parse(msg, values, filter)
}

func fieldAt(md protoreflect.MessageDescriptor, path []string) protoreflect.FieldDescriptor {
	fd := md.Fields().ByName(protoreflect.Name(path[0]))
	if fd == nil {
		fd = md.Fields().ByJSONName(path[0])
	}
	if fd == nil || len(path) == 1 {
		return fd
	}
	if fd.Message() == nil {
		return nil
	}
	return fieldAt(fd.Message(), path[1:])
}
