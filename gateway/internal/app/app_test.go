package app

// End-to-end tests of the handler against an in-process fake gRPC server (bufconn):
// routing, status codes, headers to metadata, the error body and the streaming upload.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	vidscanv1 "github.com/vidscan/vidscan/gateway/gen/vidscan/v1"
	"github.com/vidscan/vidscan/gateway/internal/tracing"
	"github.com/vidscan/vidscan/gateway/internal/upload"
)

// fakeServer records what the gateway sent.
type fakeServer struct {
	vidscanv1.UnimplementedUploadServiceServer
	vidscanv1.UnimplementedAnalysisServiceServer

	mu        sync.Mutex
	md        metadata.MD
	header    *vidscanv1.UploadHeader
	chunks    []int
	received  bytes.Buffer
	streamErr error         // how the last UploadVideo ended on the server side
	done      chan struct{} // closed when UploadVideo returns
	firstData chan struct{} // closed on the first chunk
	finished  bool          // a message with finish_write arrived
	failAfter int           // fail UploadVideo with failWith after this many chunks (>0)
	failWith  error
	created   int
}

func newFake() *fakeServer {
	return &fakeServer{done: make(chan struct{}), firstData: make(chan struct{})}
}

func (f *fakeServer) CreateUploadSession(ctx context.Context, req *vidscanv1.CreateUploadSessionRequest) (*vidscanv1.CreateUploadSessionResponse, error) {
	f.mu.Lock()
	f.created++
	f.md, _ = metadata.FromIncomingContext(ctx)
	f.mu.Unlock()
	return &vidscanv1.CreateUploadSessionResponse{Session: &vidscanv1.UploadSession{
		SessionId: "s-new", State: vidscanv1.UploadSessionState_UPLOAD_SESSION_STATE_ACTIVE, MaxBytes: req.GetExpectedSize(),
	}}, nil
}

func (f *fakeServer) GetUploadSession(_ context.Context, req *vidscanv1.GetUploadSessionRequest) (*vidscanv1.GetUploadSessionResponse, error) {
	return &vidscanv1.GetUploadSessionResponse{SessionId: req.GetSessionId(), Status: "active"}, nil
}

func (f *fakeServer) CancelUploadSession(_ context.Context, req *vidscanv1.CancelUploadSessionRequest) (*vidscanv1.CancelUploadSessionResponse, error) {
	if req.GetSessionId() == "gone" {
		st, _ := status.New(codes.NotFound, "no such session").WithDetails(
			&errdetails.ErrorInfo{Reason: "SESSION_NOT_FOUND", Metadata: map[string]string{"session_id": "gone"}})
		return nil, st.Err()
	}
	return &vidscanv1.CancelUploadSessionResponse{SessionId: req.GetSessionId(), CleanupPerformed: true}, nil
}

func (f *fakeServer) GetVideo(_ context.Context, req *vidscanv1.GetVideoRequest) (*vidscanv1.GetVideoResponse, error) {
	if req.GetVideoId() != "v1" {
		return nil, status.Error(codes.NotFound, "video not found")
	}
	return &vidscanv1.GetVideoResponse{Video: &vidscanv1.Video{VideoId: "v1", FileSize: 10}}, nil
}

func (f *fakeServer) UploadVideo(stream grpc.ClientStreamingServer[vidscanv1.UploadVideoRequest, vidscanv1.UploadVideoResponse]) (err error) {
	defer func() {
		f.mu.Lock()
		f.streamErr = err
		f.mu.Unlock()
		close(f.done)
	}()
	md, _ := metadata.FromIncomingContext(stream.Context())
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.md = md
	f.header = first.GetHeader()
	f.mu.Unlock()
	if f.header == nil {
		return status.Error(codes.InvalidArgument, "MISSING_HEADER")
	}
	finished := false
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if finished {
			return status.Error(codes.InvalidArgument, "no message may follow finish_write")
		}
		finished = msg.GetFinishWrite()
		f.mu.Lock()
		f.finished = finished
		f.mu.Unlock()
		if len(msg.GetChunk()) == 0 {
			continue
		}
		f.mu.Lock()
		if len(f.chunks) == 0 {
			close(f.firstData)
		}
		f.chunks = append(f.chunks, len(msg.GetChunk()))
		f.received.Write(msg.GetChunk())
		n := len(f.chunks)
		f.mu.Unlock()
		if f.failAfter > 0 && n >= f.failAfter {
			return f.failWith
		}
	}
	if !finished {
		return status.Error(codes.InvalidArgument, "UPLOAD_INCOMPLETE")
	}
	f.mu.Lock()
	size := int64(f.received.Len())
	f.mu.Unlock()
	return stream.SendAndClose(&vidscanv1.UploadVideoResponse{Result: &vidscanv1.UploadResult{
		VideoId: "v1", AnalysisId: "a1", UploadStatus: vidscanv1.UploadStatus_UPLOAD_STATUS_PROCESSING,
		Filename: f.header.GetFilename(), FileSize: size, EstimatedProcessingTime: 30,
	}})
}

type env struct {
	fake *fakeServer
	srv  *httptest.Server
	hs   *health.Server
}

func setup(t *testing.T, cfg upload.Config) *env {
	t.Helper()
	return setupWith(t, cfg, false)
}

// setupWith: traced turns on Config.Tracing and puts tracing.ClientStatsHandler on the
// upstream conn, as main does when the OTEL_* environment enables tracing.
func setupWith(t *testing.T, cfg upload.Config, traced bool) *env {
	t.Helper()
	fake := newFake()
	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer()
	vidscanv1.RegisterUploadServiceServer(gs, fake)
	vidscanv1.RegisterAnalysisServiceServer(gs, fake)
	hs := health.NewServer()
	grpc_health_v1.RegisterHealthServer(gs, hs)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)

	opts := []grpc.DialOption{
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	}
	if traced {
		opts = append(opts, grpc.WithStatsHandler(tracing.ClientStatsHandler()))
	}
	conn, err := grpc.NewClient("passthrough:///bufnet", opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	if cfg.ChunkBytes == 0 {
		cfg = upload.Config{MaxUploadBytes: 1 << 20, MultipartSlack: 64 << 10, ChunkBytes: 1024,
			MaxFieldBytes: 4096, IdleTimeout: 5 * time.Second, ErrorDrainBytes: 4 << 20}
	}
	h, err := New(Config{Upload: cfg, CORSOrigins: "https://dash.example", Tracing: traced}, conn, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &env{fake: fake, srv: srv, hs: hs}
}

type part struct{ name, filename, value string }

func form(t *testing.T, parts ...part) (string, []byte) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		var w io.Writer
		var err error
		if p.filename != "" {
			hdr := textproto.MIMEHeader{}
			hdr.Set("Content-Disposition", fmt.Sprintf(`form-data; name=%q; filename=%q`, p.name, p.filename))
			hdr.Set("Content-Type", "video/mp4")
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

func do(t *testing.T, method, url, ctype string, body io.Reader, hdr ...string) (*http.Response, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, body)
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for i := 0; i < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatalf("%s %s: %d non-JSON body %q", method, url, resp.StatusCode, raw)
		}
	}
	return resp, m
}

func TestUploadStreamsChunks(t *testing.T) {
	e := setup(t, upload.Config{})
	file := strings.Repeat("0123456789", 350) // 3500 bytes -> chunks of 1024
	ctype, body := form(t,
		part{name: "metadata", value: `{"source":"dash"}`},
		part{name: "size", value: "3500"},
		part{name: "model", value: "m1"},
		part{name: "extra", value: "ignored"},
		part{name: "file", filename: "c.mp4", value: file})
	resp, m := do(t, "POST", e.srv.URL+"/v1/dashboard/upload/s1", ctype, bytes.NewReader(body),
		"Authorization", "Bearer tok", "X-Request-Id", "rid-1")
	if resp.StatusCode != 201 {
		t.Fatalf("%d %v", resp.StatusCode, m)
	}
	if m["upload_status"] != "processing" || m["file_size"] != float64(3500) || m["video_id"] != "v1" {
		t.Fatalf("%v", m)
	}
	if resp.Header.Get("X-Request-Id") != "rid-1" || resp.Header.Get("Location") != "/v1/videos/v1" {
		t.Fatalf("%v", resp.Header)
	}
	f := e.fake
	<-f.done
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.header.GetSessionId() != "s1" || f.header.GetFilename() != "c.mp4" || f.header.GetContentType() != "video/mp4" ||
		f.header.GetDeclaredSize() != 3500 || f.header.GetModel() != "m1" ||
		f.header.GetMetadata().GetFields()["source"].GetStringValue() != "dash" {
		t.Fatalf("header %v", f.header)
	}
	if !f.finished {
		t.Fatal("finish_write not sent")
	}
	if fmt.Sprint(f.chunks) != "[1024 1024 1024 428]" || f.received.String() != file {
		t.Fatalf("chunks %v", f.chunks)
	}
	if got := f.md.Get("authorization"); len(got) == 0 || got[0] != "Bearer tok" {
		t.Fatalf("authorization metadata: %v", f.md)
	}
	if got := f.md.Get("x-request-id"); len(got) != 1 || got[0] != "rid-1" {
		t.Fatalf("x-request-id metadata: %v", f.md)
	}
}

// The first chunk reaches the server while the client is still sending.
func TestUploadIsStreamed(t *testing.T) {
	e := setup(t, upload.Config{})
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		w, _ := mw.CreateFormFile("file", "big.mp4")
		_, _ = w.Write(bytes.Repeat([]byte("a"), 4096))
		select { // hold the rest back until the server saw data
		case <-e.fake.firstData:
		case <-time.After(5 * time.Second):
			_ = pw.CloseWithError(fmt.Errorf("server saw no data before the body ended"))
			return
		}
		_, _ = w.Write(bytes.Repeat([]byte("b"), 4096))
		_ = mw.Close()
		_ = pw.Close()
	}()
	resp, m := do(t, "POST", e.srv.URL+"/v1/dashboard/upload/s1", mw.FormDataContentType(), pr)
	if resp.StatusCode != 201 || m["file_size"] != float64(8192) {
		t.Fatalf("%d %v", resp.StatusCode, m)
	}
	if m["filename"] != "big.mp4" {
		t.Fatalf("filename defaults to the part's: %v", m)
	}
}

func TestUploadFieldAfterFileCancels(t *testing.T) {
	e := setup(t, upload.Config{})
	ctype, body := form(t, part{name: "file", filename: "c.mp4", value: "data"}, part{name: "model", value: "m1"})
	resp, m := do(t, "POST", e.srv.URL+"/v1/dashboard/upload/s1", ctype, bytes.NewReader(body))
	if resp.StatusCode != 400 || m["error_code"] != "INVALID_FIELD" || !strings.Contains(m["error_message"].(string), "may follow the file") {
		t.Fatalf("%d %v", resp.StatusCode, m)
	}
	select {
	case <-e.fake.done:
	case <-time.After(5 * time.Second):
		t.Fatal("server stream still open")
	}
	if status.Code(e.fake.streamErr) != codes.Canceled || e.fake.finished {
		t.Fatalf("server must see a cancellation without finish_write, got %v (finished %v)", e.fake.streamErr, e.fake.finished)
	}
}

func TestUploadFormErrors(t *testing.T) {
	e := setup(t, upload.Config{})
	url := e.srv.URL + "/v1/dashboard/upload/s1"

	ctype, body := form(t, part{name: "filename", value: "x.mp4"})
	resp, m := do(t, "POST", url, ctype, bytes.NewReader(body))
	if resp.StatusCode != 400 || m["error_code"] != "INVALID_FIELD" {
		t.Fatalf("missing file: %d %v", resp.StatusCode, m)
	}
	fv := m["details"].(map[string]any)["field_violations"].([]any)[0].(map[string]any)
	if fv["field"] != "file" {
		t.Fatalf("%v", fv)
	}

	resp, m = do(t, "POST", url, "application/json", strings.NewReader("{}"))
	if resp.StatusCode != 415 || m["error_code"] != "UNSUPPORTED_MEDIA_TYPE" {
		t.Fatalf("json body: %d %v", resp.StatusCode, m)
	}

	ctype, body = form(t, part{name: "metadata", value: "[1]"}, part{name: "file", filename: "c.mp4", value: "d"})
	resp, m = do(t, "POST", url, ctype, bytes.NewReader(body))
	if resp.StatusCode != 400 || !strings.Contains(m["error_message"].(string), "metadata") {
		t.Fatalf("bad metadata: %d %v", resp.StatusCode, m)
	}

	ctype, body = form(t, part{name: "size", value: "2000000"}, part{name: "file", filename: "c.mp4", value: "d"})
	resp, m = do(t, "POST", url, ctype, bytes.NewReader(body))
	if resp.StatusCode != 413 || m["error_code"] != "FILE_TOO_LARGE" {
		t.Fatalf("declared too large: %d %v", resp.StatusCode, m)
	}

	ctype, body = form(t, part{name: "metadata", value: strings.Repeat("x", 5000)}, part{name: "file", filename: "c.mp4", value: "d"})
	resp, m = do(t, "POST", url, ctype, bytes.NewReader(body))
	if resp.StatusCode != 400 || m["error_code"] != "METADATA_TOO_LARGE" {
		t.Fatalf("long field: %d %v", resp.StatusCode, m)
	}

	ctype, body = form(t, part{name: "file", filename: "c.mp4", value: "d"})
	resp, m = do(t, "POST", url, ctype, bytes.NewReader(body[:len(body)-10]))
	if resp.StatusCode != 400 || m["error_code"] != "MALFORMED_MULTIPART" {
		t.Fatalf("truncated: %d %v", resp.StatusCode, m)
	}
}

func TestUploadTooLarge(t *testing.T) {
	e := setup(t, upload.Config{})
	// Just above the file limit but within the body slack: counted by the gateway.
	ctype, body := form(t, part{name: "file", filename: "c.mp4", value: strings.Repeat("x", 1<<20+1)})
	resp, m := do(t, "POST", e.srv.URL+"/v1/dashboard/upload/s1", ctype, bytes.NewReader(body))
	if resp.StatusCode != 413 || m["error_code"] != "FILE_TOO_LARGE" || m["details"].(map[string]any)["max_bytes"] != "1048576" {
		t.Fatalf("%d %v", resp.StatusCode, m)
	}
	<-e.fake.done
	if status.Code(e.fake.streamErr) != codes.Canceled || e.fake.finished {
		t.Fatalf("server must see a cancellation without finish_write, got %v (finished %v)", e.fake.streamErr, e.fake.finished)
	}

	// Beyond the body cap: refused from Content-Length, before the body is read.
	ctype, body = form(t, part{name: "file", filename: "c.mp4", value: strings.Repeat("x", 2<<20)})
	resp, m = do(t, "POST", e.srv.URL+"/v1/dashboard/upload/s2", ctype, bytes.NewReader(body))
	if resp.StatusCode != 413 || m["error_code"] != "FILE_TOO_LARGE" {
		t.Fatalf("%d %v", resp.StatusCode, m)
	}
}

func TestUploadServerErrorMapsToBody(t *testing.T) {
	e := setup(t, upload.Config{})
	st, _ := status.New(codes.InvalidArgument, "not a video").WithDetails(
		&errdetails.ErrorInfo{Reason: "UNSUPPORTED_FORMAT", Metadata: map[string]string{"detected": "text/plain"}},
		&vidscanv1.CleanupReport{CleanupPerformed: true, S3Cleanup: true, SessionCleanup: true, DatabaseCleanup: true},
	)
	e.fake.failAfter, e.fake.failWith = 1, st.Err()
	ctype, body := form(t, part{name: "file", filename: "c.mp4", value: strings.Repeat("x", 100_000)})
	resp, m := do(t, "POST", e.srv.URL+"/v1/dashboard/upload/s1", ctype, bytes.NewReader(body))
	if resp.StatusCode != 400 || m["error_code"] != "UNSUPPORTED_FORMAT" || m["cleanup_performed"] != true {
		t.Fatalf("%d %v", resp.StatusCode, m)
	}
	cd := m["cleanup_details"].(map[string]any)
	if cd["s3_cleanup"] != true || cd["database_cleanup"] != true || m["details"].(map[string]any)["detected"] != "text/plain" {
		t.Fatalf("%v", m)
	}
	if _, err := time.Parse(time.RFC3339, m["timestamp"].(string)); err != nil {
		t.Fatal(err)
	}
}

// A client that goes away mid-body cancels the gRPC stream.
func TestUploadClientDisconnectCancels(t *testing.T) {
	e := setup(t, upload.Config{})
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	ctype, body := form(t, part{name: "file", filename: "c.mp4", value: strings.Repeat("x", 500_000)})
	fmt.Fprintf(conn, "POST /v1/dashboard/upload/s1 HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n", ctype, len(body))
	_, _ = conn.Write(body[:200_000])
	select {
	case <-e.fake.firstData:
	case <-time.After(5 * time.Second):
		t.Fatal("no data reached the server")
	}
	_ = conn.Close()
	select {
	case <-e.fake.done:
	case <-time.After(5 * time.Second):
		t.Fatal("server stream not cancelled after the client left")
	}
	if status.Code(e.fake.streamErr) != codes.Canceled || e.fake.finished {
		t.Fatalf("server must see a cancellation without finish_write, got %v (finished %v)", e.fake.streamErr, e.fake.finished)
	}
}

func TestUploadIdleTimeout(t *testing.T) {
	e := setup(t, upload.Config{MaxUploadBytes: 1 << 20, MultipartSlack: 64 << 10, ChunkBytes: 1024,
		MaxFieldBytes: 4096, IdleTimeout: 300 * time.Millisecond, ErrorDrainBytes: 1 << 20})
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctype, body := form(t, part{name: "file", filename: "c.mp4", value: strings.Repeat("x", 10_000)})
	fmt.Fprintf(conn, "POST /v1/dashboard/upload/s1 HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n", ctype, len(body))
	_, _ = conn.Write(body[:5000]) // then stall
	select {
	case <-e.fake.done:
	case <-time.After(5 * time.Second):
		t.Fatal("stalled upload not cancelled")
	}
	if status.Code(e.fake.streamErr) != codes.Canceled || e.fake.finished {
		t.Fatalf("server must see a cancellation without finish_write, got %v (finished %v)", e.fake.streamErr, e.fake.finished)
	}
}

// A stall answers 408 UPLOAD_IDLE_TIMEOUT every time. net/http cancels the request
// context when the connection read times out; bytes that came back together with the
// timeout must not be forwarded first, or the cancelled stream's CANCELLED (499) wins.
func TestUploadIdleTimeoutAnswers408(t *testing.T) {
	ctype, body := form(t, part{name: "file", filename: "c.mp4", value: strings.Repeat("x", 10_000)})
	for i := 0; i < 20; i++ {
		e := setup(t, upload.Config{MaxUploadBytes: 1 << 20, MultipartSlack: 64 << 10, ChunkBytes: 4096,
			MaxFieldBytes: 4096, IdleTimeout: 100 * time.Millisecond, ErrorDrainBytes: 1 << 20})
		conn, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "POST /v1/dashboard/upload/s1 HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n", ctype, len(body))
		_, _ = conn.Write(body[:1000]) // less than a chunk, then stall
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		_ = resp.Body.Close()
		_ = conn.Close()
		if resp.StatusCode != http.StatusRequestTimeout || m["error_code"] != "UPLOAD_IDLE_TIMEOUT" {
			t.Fatalf("attempt %d: %d %v", i, resp.StatusCode, m)
		}
	}
}

func TestGeneratedRoutes(t *testing.T) {
	e := setup(t, upload.Config{})
	base := e.srv.URL

	resp, m := do(t, "POST", base+"/v1/dashboard/upload/sessions", "application/json", strings.NewReader(`{"expected_size": "123"}`),
		"Authorization", "Bearer t")
	if resp.StatusCode != 200 || m["session_id"] != "s-new" || fmt.Sprint(m["max_bytes"]) != "123" || e.fake.created != 1 {
		t.Fatalf("create: %d %v", resp.StatusCode, m)
	}
	if m["state"] != "active" || fmt.Sprint(m["committed_bytes"]) != "0" || m["created_at"] != nil {
		t.Fatalf("the REST shape (internal/restjson): numbers, lower-case enums, nulls: %v", m)
	}
	if got := e.fake.md.Get("authorization"); len(got) == 0 || got[0] != "Bearer t" {
		t.Fatalf("authorization: %v", e.fake.md)
	}
	if rid := resp.Header.Get("X-Request-Id"); len(rid) != 36 || e.fake.md.Get("x-request-id")[0] != rid {
		t.Fatalf("generated request id %q, metadata %v", rid, e.fake.md.Get("x-request-id"))
	}

	resp, m = do(t, "POST", base+"/v1/dashboard/upload/sessions", "", nil)
	if resp.StatusCode != 200 || m["session_id"] != "s-new" {
		t.Fatalf("create without a body: %d %v", resp.StatusCode, m)
	}

	resp, m = do(t, "GET", base+"/v1/dashboard/upload/s1/status", "", nil)
	if resp.StatusCode != 200 || m["status"] != "active" {
		t.Fatalf("status: %d %v", resp.StatusCode, m)
	}
	if _, ok := m["session"]; !ok {
		t.Fatalf("EmitUnpopulated: %v", m)
	}

	resp, m = do(t, "DELETE", base+"/v1/dashboard/upload/s1", "", nil)
	if resp.StatusCode != 204 || m != nil {
		t.Fatalf("cancel: %d %v", resp.StatusCode, m)
	}
	resp, m = do(t, "DELETE", base+"/v1/dashboard/upload/gone", "", nil)
	if resp.StatusCode != 404 || m["error_code"] != "SESSION_NOT_FOUND" || m["details"].(map[string]any)["session_id"] != "gone" {
		t.Fatalf("cancel missing: %d %v", resp.StatusCode, m)
	}

	resp, m = do(t, "GET", base+"/v1/videos/v1", "", nil)
	if resp.StatusCode != 200 || m["video_id"] != "v1" || fmt.Sprint(m["file_size"]) != "10" {
		t.Fatalf("video: %d %v", resp.StatusCode, m)
	}
	resp, m = do(t, "GET", base+"/v1/videos/nope", "", nil)
	if resp.StatusCode != 404 || m["error_code"] != "NOT_FOUND" || m["cleanup_performed"] != false {
		t.Fatalf("video 404: %d %v", resp.StatusCode, m)
	}
	resp, m = do(t, "GET", base+"/v1/analyses/a1", "", nil)
	if resp.StatusCode != 501 || m["error_code"] != "UNIMPLEMENTED" {
		t.Fatalf("analysis: %d %v", resp.StatusCode, m)
	}

	resp, m = do(t, "GET", base+"/v1/nothing", "", nil)
	if resp.StatusCode != 404 || m["error_code"] != "NOT_FOUND" {
		t.Fatalf("unknown route: %d %v", resp.StatusCode, m)
	}
	resp, m = do(t, "PUT", base+"/v1/videos/v1", "", nil)
	if resp.StatusCode != 405 || m["error_code"] != "METHOD_NOT_ALLOWED" {
		t.Fatalf("wrong method: %d %v", resp.StatusCode, m)
	}
}

func TestHealthzAndOpenAPI(t *testing.T) {
	e := setup(t, upload.Config{})
	resp, m := do(t, "GET", e.srv.URL+"/healthz", "", nil)
	if resp.StatusCode != 200 || m["status"] != "SERVING" {
		t.Fatalf("%d %v", resp.StatusCode, m)
	}
	e.hs.SetServingStatus("", grpc_health_v1.HealthCheckResponse_NOT_SERVING)
	resp, m = do(t, "GET", e.srv.URL+"/healthz", "", nil)
	if resp.StatusCode != 503 || m["error_code"] != "UNAVAILABLE" {
		t.Fatalf("%d %v", resp.StatusCode, m)
	}
	resp, m = do(t, "GET", e.srv.URL+"/openapi.json", "", nil)
	if resp.StatusCode != 200 || m["swagger"] != "2.0" {
		t.Fatalf("%d %v", resp.StatusCode, m)
	}
}

func TestCORSPreflightThroughHandler(t *testing.T) {
	e := setup(t, upload.Config{})
	resp, _ := do(t, "OPTIONS", e.srv.URL+"/v1/dashboard/upload/s1", "", nil,
		"Origin", "https://dash.example", "Access-Control-Request-Method", "POST")
	if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != "https://dash.example" {
		t.Fatalf("%d %v", resp.StatusCode, resp.Header)
	}
}
