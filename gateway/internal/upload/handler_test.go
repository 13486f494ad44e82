package upload

// The form reader of the upload route, part by part, against a fake UploadVideo
// stream that records every message: fields before the file go in the header, the
// file streams as chunks, fields after it go in the trailer of the finish_write
// message, and every refusal cancels the stream without finish_write.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	vidscanv1 "github.com/vidscan/vidscan/gateway/gen/vidscan/v1"
)

type fakeStream struct {
	grpc.ClientStream // unused methods; nil

	ctx       context.Context
	mu        sync.Mutex
	msgs      []*vidscanv1.UploadVideoRequest
	firstData chan struct{} // closed on the first chunk
}

func (s *fakeStream) Send(m *vidscanv1.UploadVideoRequest) error {
	if s.ctx.Err() != nil {
		return io.EOF
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(m.GetChunk()) > 0 && s.chunkCount() == 0 {
		close(s.firstData)
	}
	s.msgs = append(s.msgs, proto.Clone(m).(*vidscanv1.UploadVideoRequest)) // the chunk buffer is reused
	return nil
}

func (s *fakeStream) chunkCount() int {
	n := 0
	for _, m := range s.msgs {
		if len(m.GetChunk()) > 0 {
			n++
		}
	}
	return n
}

// CloseAndRecv answers what the server would record: the trailer's values win.
func (s *fakeStream) CloseAndRecv() (*vidscanv1.UploadVideoResponse, error) {
	if s.ctx.Err() != nil {
		return nil, status.Error(codes.Canceled, "cancelled")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	h, last := s.msgs[0].GetHeader(), s.msgs[len(s.msgs)-1]
	r := &vidscanv1.UploadResult{VideoId: "v1", Filename: h.GetFilename(), Metadata: h.GetMetadata()}
	if tr := last.GetTrailer(); tr != nil {
		if tr.Filename != nil {
			r.Filename = tr.GetFilename()
		}
		if tr.Metadata != nil {
			r.Metadata = tr.GetMetadata()
		}
	}
	return &vidscanv1.UploadVideoResponse{Result: r}, nil
}

type fakeClient struct {
	vidscanv1.UploadServiceClient // only UploadVideo is called; nil

	mu     sync.Mutex
	stream *fakeStream
}

func (c *fakeClient) UploadVideo(ctx context.Context, _ ...grpc.CallOption) (grpc.ClientStreamingClient[vidscanv1.UploadVideoRequest, vidscanv1.UploadVideoResponse], error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stream = &fakeStream{ctx: ctx, firstData: make(chan struct{})}
	return c.stream, nil
}

func (c *fakeClient) current() *fakeStream {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stream
}

// sent returns the header, the file bytes and the last message of the stream.
func (s *fakeStream) sent(t *testing.T) (*vidscanv1.UploadHeader, string, *vidscanv1.UploadVideoRequest) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var file bytes.Buffer
	for i, m := range s.msgs {
		if (i == 0) != (m.GetHeader() != nil) {
			t.Fatalf("message %d: the header must be first and only first: %v", i, m)
		}
		if m.GetTrailer() != nil && !m.GetFinishWrite() {
			t.Fatalf("message %d: a trailer without finish_write", i)
		}
		file.Write(m.GetChunk())
	}
	return s.msgs[0].GetHeader(), file.String(), s.msgs[len(s.msgs)-1]
}

type formPart struct{ name, filename, value string }

func multipartBody(t *testing.T, parts ...formPart) (string, []byte) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		var w io.Writer
		var err error
		if p.filename != "" {
			hdr := textproto.MIMEHeader{}
			hdr.Set("Content-Disposition", fmt.Sprintf(`form-data; name=%q; filename=%q`, p.name, p.filename))
			hdr.Set("Content-Type", "video/webm")
			w, err = mw.CreatePart(hdr)
		} else {
			w, err = mw.CreateFormField(p.name)
		}
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(w, p.value)
	}
	_ = mw.Close()
	return mw.FormDataContentType(), buf.Bytes()
}

var testConfig = Config{MaxUploadBytes: 1 << 20, MultipartSlack: 64 << 10, ChunkBytes: 1024,
	MaxFieldBytes: 4096, ErrorDrainBytes: 1 << 20}

func serve(t *testing.T, ctype string, body io.Reader) (*fakeClient, int, map[string]any) {
	t.Helper()
	client := &fakeClient{}
	h := NewHandler(testConfig, runtime.NewServeMux(), client, slog.New(slog.NewTextHandler(io.Discard, nil)))
	req := httptest.NewRequest(http.MethodPost, "/v1/dashboard/upload/s1", body)
	req.Header.Set("Content-Type", ctype)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req, map[string]string{"session_id": "s1"})
	var m map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
		t.Fatalf("%d: non-JSON body %q", rec.Code, rec.Body.String())
	}
	return client, rec.Code, m
}

var file = strings.Repeat("0123456789", 250) // 2500 bytes: three chunks

func TestFieldsBeforeTheFileGoInTheHeader(t *testing.T) {
	ctype, body := multipartBody(t,
		formPart{name: "filename", value: "early.webm"}, formPart{name: "metadata", value: `{"a":1}`},
		formPart{name: "file", filename: "clip.webm", value: file})
	client, code, m := serve(t, ctype, bytes.NewReader(body))
	if code != http.StatusCreated {
		t.Fatalf("%d %v", code, m)
	}
	h, got, last := client.current().sent(t)
	if h.GetFilename() != "early.webm" || h.GetMetadata().GetFields()["a"].GetNumberValue() != 1 || got != file {
		t.Fatalf("header %v, %d bytes", h, len(got))
	}
	if !last.GetFinishWrite() || last.GetTrailer() != nil {
		t.Fatalf("last message %v", last)
	}
}

func TestFieldsAfterTheFileGoInTheTrailer(t *testing.T) {
	ctype, body := multipartBody(t,
		formPart{name: "model", value: "m1"}, formPart{name: "note", value: "unknown before the file: ignored"},
		formPart{name: "file", filename: "clip.webm", value: file},
		formPart{name: "metadata", value: `{"a":1}`}, formPart{name: "filename", value: "late.webm"},
		formPart{name: "content_type", value: "video/x-matroska"})
	client, code, m := serve(t, ctype, bytes.NewReader(body))
	if code != http.StatusCreated || m["filename"] != "late.webm" {
		t.Fatalf("%d %v", code, m)
	}
	h, got, last := client.current().sent(t)
	if h.GetFilename() != "clip.webm" || h.GetContentType() != "video/webm" || h.GetMetadata() != nil ||
		h.GetModel() != "m1" || got != file {
		t.Fatalf("header %v, %d bytes", h, len(got))
	}
	tr := last.GetTrailer()
	if !last.GetFinishWrite() || len(last.GetChunk()) != 0 || tr.GetFilename() != "late.webm" ||
		tr.GetContentType() != "video/x-matroska" || tr.GetMetadata().GetFields()["a"].GetNumberValue() != 1 {
		t.Fatalf("last message %v", last)
	}
}

// The file is forwarded while it arrives even when fields follow it: the gateway
// never holds the file back waiting for the rest of the form.
func TestFileStreamsBeforeLateFieldsArrive(t *testing.T) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	client := &fakeClient{}
	go func() {
		w, _ := mw.CreateFormFile("file", "clip.webm")
		_, _ = io.WriteString(w, file)
		deadline := time.Now().Add(5 * time.Second)
		for client.current() == nil && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		select {
		case <-client.current().firstData:
		case <-time.After(5 * time.Second):
			_ = pw.CloseWithError(fmt.Errorf("no chunk reached the server before the late field"))
			return
		}
		_ = mw.WriteField("metadata", `{"late":true}`)
		_ = mw.Close()
		_ = pw.Close()
	}()
	h := NewHandler(testConfig, runtime.NewServeMux(), client, slog.New(slog.NewTextHandler(io.Discard, nil)))
	req := httptest.NewRequest(http.MethodPost, "/v1/dashboard/upload/s1", pr)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req, map[string]string{"session_id": "s1"})
	if rec.Code != http.StatusCreated {
		t.Fatalf("%d %s", rec.Code, rec.Body.String())
	}
	_, got, last := client.current().sent(t)
	if got != file || !last.GetTrailer().GetMetadata().GetFields()["late"].GetBoolValue() {
		t.Fatalf("%d bytes, last %v", len(got), last)
	}
}

func TestPartsAfterTheFileThatAreRefused(t *testing.T) {
	f := formPart{name: "file", filename: "clip.webm", value: file}
	cases := map[string]struct {
		parts        []formPart
		status       int
		code, field  string
		streamOpened bool
	}{
		"second file":       {[]formPart{f, f}, 400, "INVALID_FIELD", "file", true},
		"size after file":   {[]formPart{f, {name: "size", value: "2500"}}, 400, "INVALID_FIELD", "size", true},
		"model after file":  {[]formPart{f, {name: "model", value: "m"}}, 400, "INVALID_FIELD", "model", true},
		"unknown after":     {[]formPart{f, {name: "note", value: "x"}}, 400, "INVALID_FIELD", "note", true},
		"given on both":     {[]formPart{{name: "filename", value: "a"}, f, {name: "filename", value: "b"}}, 400, "INVALID_FIELD", "filename", true},
		"late bad metadata": {[]formPart{f, {name: "metadata", value: "[1]"}}, 400, "INVALID_FIELD", "metadata", true},
		"late metadata too large": {[]formPart{f, {name: "metadata", value: `{"k":"` + strings.Repeat("x", 5000) + `"}`}},
			400, "METADATA_TOO_LARGE", "metadata", true},
		"early metadata too large": {[]formPart{{name: "metadata", value: `{"k":"` + strings.Repeat("x", 5000) + `"}`}, f},
			400, "METADATA_TOO_LARGE", "metadata", false},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			ctype, body := multipartBody(t, c.parts...)
			client, code, m := serve(t, ctype, bytes.NewReader(body))
			if code != c.status || m["error_code"] != c.code {
				t.Fatalf("%d %v", code, m)
			}
			violations, _ := m["details"].(map[string]any)["field_violations"].([]any)
			if len(violations) == 0 || violations[0].(map[string]any)["field"] != c.field {
				t.Fatalf("field violations %v", m["details"])
			}
			s := client.current()
			if (s != nil) != c.streamOpened {
				t.Fatalf("stream opened: %v", s != nil)
			}
			if s == nil {
				return
			}
			if s.ctx.Err() == nil {
				t.Fatal("the stream must be cancelled")
			}
			for _, msg := range s.msgs {
				if msg.GetFinishWrite() {
					t.Fatal("a refused form must never send finish_write")
				}
			}
		})
	}
}
