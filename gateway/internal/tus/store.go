package tus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/tus/tusd/v2/pkg/handler"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	vidscanv1 "github.com/vidscan/vidscan/gateway/gen/vidscan/v1"
	"github.com/vidscan/vidscan/gateway/internal/apierr"
)

// store is tusd's DataStore (and TerminaterDataStore) on vidscan's upload sessions:
// an upload id is a session id, an offset is the session's committed_bytes, and each
// PATCH is one UploadVideo stream. It keeps no state of its own.
type store struct {
	client vidscanv1.UploadServiceClient
	cfg    Config
	bufs   sync.Pool
}

func newStore(client vidscanv1.UploadServiceClient, cfg Config) *store {
	s := &store{client: client, cfg: cfg}
	s.bufs.New = func() any { b := make([]byte, cfg.ChunkBytes); return &b }
	return s
}

// Metadata keys read from Upload-Metadata; the alternatives are those Uppy and
// tus-js-client's examples send (name, type).
var (
	filenameKeys    = []string{"filename", "name"}
	contentTypeKeys = []string{"filetype", "content_type", "type"}
)

func first(meta handler.MetaData, keys []string) string {
	for _, k := range keys {
		if v := meta[k]; v != "" {
			return v
		}
	}
	return ""
}

// intentOf turns a creation request's metadata into the session's UploadIntent.
func intentOf(info handler.FileInfo) (*vidscanv1.UploadIntent, error) {
	meta := info.MetaData
	size := info.Size
	intent := &vidscanv1.UploadIntent{
		Filename:       first(meta, filenameKeys),
		ContentType:    first(meta, contentTypeKeys),
		Model:          meta["model"],
		DeclaredSha256: strings.ToLower(meta["sha256"]),
		CallbackUrl:    meta["callback_url"],
		DeclaredSize:   &size,
	}
	if raw := meta["metadata"]; raw != "" {
		var fields map[string]any
		if err := json.Unmarshal([]byte(raw), &fields); err != nil {
			return nil, badMetadata("metadata", "must be a JSON object")
		}
		st, err := structpb.NewStruct(fields)
		if err != nil {
			return nil, badMetadata("metadata", "must be a JSON object")
		}
		intent.Metadata = st
	}
	return intent, nil
}

func badMetadata(key, problem string) error {
	field := "Upload-Metadata." + key
	return errorFrom(apierr.New(codes.InvalidArgument, vidscanv1.ErrorReason_INVALID_FIELD, field,
		field+": "+problem, nil))
}

// metadataOf is the Upload-Metadata a HEAD answers, from the session's intent.
func metadataOf(intent *vidscanv1.UploadIntent) handler.MetaData {
	meta := handler.MetaData{}
	if intent.GetFilename() != "" {
		meta["filename"] = intent.GetFilename()
	}
	if intent.GetContentType() != "" {
		meta["filetype"] = intent.GetContentType()
	}
	if intent.GetModel() != "" {
		meta["model"] = intent.GetModel()
	}
	return meta
}

func (s *store) NewUpload(ctx context.Context, info handler.FileInfo) (handler.Upload, error) {
	if info.SizeIsDeferred || info.IsPartial || info.IsFinal {
		return nil, errorFrom(apierr.New(codes.InvalidArgument, vidscanv1.ErrorReason_INVALID_FIELD,
			"Upload-Length", "Upload-Length is required (deferred lengths and concatenation are not offered)", nil))
	}
	intent, err := intentOf(info)
	if err != nil {
		return nil, err
	}
	size := info.Size
	resp, err := s.client.CreateUploadSession(ctx, &vidscanv1.CreateUploadSessionRequest{
		ExpectedSize: &size, Intent: intent,
	})
	if err != nil {
		return nil, errorFrom(status.Convert(err))
	}
	info.ID = resp.GetSession().GetSessionId()
	info.Offset = 0
	return &upload{s: s, info: info}, nil
}

func (s *store) GetUpload(ctx context.Context, id string) (handler.Upload, error) {
	resp, err := s.client.GetUploadSession(ctx, &vidscanv1.GetUploadSessionRequest{SessionId: id})
	if err != nil {
		if status.Code(err) == codes.NotFound {
			return nil, handler.ErrNotFound
		}
		return nil, errorFrom(status.Convert(err))
	}
	session := resp.GetSession()
	intent := session.GetIntent()
	if intent == nil || intent.DeclaredSize == nil {
		// A session made over gRPC or REST: it has no tus length, so tus cannot drive it.
		return nil, handler.ErrNotFound
	}
	switch session.GetState() {
	case vidscanv1.UploadSessionState_UPLOAD_SESSION_STATE_ACTIVE, vidscanv1.UploadSessionState_UPLOAD_SESSION_STATE_COMPLETED:
	default: // expired or cancelled: a tus client starts a new upload on 404/410
		return nil, errGone(resp.GetStatus())
	}
	u := &upload{s: s, info: handler.FileInfo{
		ID:       id,
		Size:     intent.GetDeclaredSize(),
		Offset:   session.GetCommittedBytes(),
		MetaData: metadataOf(intent),
		Storage:  map[string]string{"Type": "vidscan", "SessionState": session.GetState().String()},
	}}
	u.completed = session.GetState() == vidscanv1.UploadSessionState_UPLOAD_SESSION_STATE_COMPLETED
	if !u.completed && u.info.Offset == u.info.Size && requestMethod(ctx) != http.MethodDelete {
		// Every byte is stored but the upload was not finished (the stream that sent
		// the last byte was cut while the server finished it): finish it now, so that
		// the offset a client sees as complete is a recorded video.
		if err := u.finish(ctx); err != nil {
			return nil, err
		}
	}
	return u, nil
}

func (s *store) AsTerminatableUpload(u handler.Upload) handler.TerminatableUpload {
	return u.(*upload)
}

func errGone(state string) error {
	return errorFrom(apierr.New(codes.NotFound, vidscanv1.ErrorReason_SESSION_NOT_FOUND, "",
		fmt.Sprintf("the upload session is %s; start a new upload", state), nil), http.StatusGone)
}

// upload is one tus upload resource: a session seen by one request.
type upload struct {
	s         *store
	info      handler.FileInfo
	completed bool
}

func (u *upload) GetInfo(context.Context) (handler.FileInfo, error) { return u.info, nil }

func (u *upload) GetReader(context.Context) (io.ReadCloser, error) {
	return nil, handler.ErrNotImplemented // GET /v1/videos/{id}/content serves the bytes
}

// WriteChunk streams src into one UploadVideo stream starting at offset. When the
// file is complete it sends finish_write and waits for the server's result; when the
// body ends before (a dropped connection, or a client that sends chunks), it
// half-closes without finish_write: the server keeps every byte it received and the
// offset it answers is the session's committed_bytes.
func (u *upload) WriteChunk(ctx context.Context, offset int64, src io.Reader) (int64, error) {
	stream, err := u.s.client.UploadVideo(ctx)
	if err != nil {
		return 0, errorFrom(status.Convert(err))
	}
	header := &vidscanv1.UploadHeader{SessionId: u.info.ID, WriteOffset: offset}
	if err := stream.Send(&vidscanv1.UploadVideoRequest{Payload: &vidscanv1.UploadVideoRequest_Header{Header: header}}); err != nil {
		return 0, u.streamError(stream, err, src)
	}
	bp := u.s.bufs.Get().(*[]byte)
	defer u.s.bufs.Put(bp)
	buf := *bp
	var sent int64
	for {
		n, rerr := io.ReadFull(src, buf) // io.EOF / io.ErrUnexpectedEOF: the body ended
		if n > 0 {
			sent += int64(n)
			last := offset+sent == u.info.Size
			msg := &vidscanv1.UploadVideoRequest{Payload: &vidscanv1.UploadVideoRequest_Chunk{Chunk: buf[:n]}, FinishWrite: last}
			if err := stream.Send(msg); err != nil {
				return 0, u.streamError(stream, err, src)
			}
			if last {
				if _, err := stream.CloseAndRecv(); err != nil {
					return 0, u.streamError(stream, err, src)
				}
				u.completed = true
				return sent, nil
			}
		}
		if rerr != nil { // tusd's body reader ends with io.EOF, also when the client went away
			break
		}
	}
	// Not the whole file: end the stream without finish_write. The server keeps what
	// it received (UPLOAD_INCOMPLETE is its normal answer); the new offset is its word.
	_, err = stream.CloseAndRecv()
	if err != nil && apierr.Reason(status.Convert(err)) != vidscanv1.ErrorReason_UPLOAD_INCOMPLETE.String() {
		return 0, errorFrom(status.Convert(err))
	}
	committed, cerr := u.committed(ctx)
	if cerr != nil {
		return 0, cerr
	}
	return committed - offset, nil
}

func (u *upload) committed(ctx context.Context) (int64, error) {
	resp, err := u.s.client.GetUploadSession(ctx, &vidscanv1.GetUploadSessionRequest{SessionId: u.info.ID})
	if err != nil {
		return 0, errorFrom(status.Convert(err))
	}
	return resp.GetSession().GetCommittedBytes(), nil
}

type uploadStream interface {
	CloseAndRecv() (*vidscanv1.UploadVideoResponse, error)
}

// streamError is the server's answer for a stream that failed: a Send that returns
// io.EOF means the server ended the stream, and its status comes from CloseAndRecv.
// What is left of the body is read (bounded) so that the client sees the answer
// instead of a reset connection.
func (u *upload) streamError(stream uploadStream, err error, src io.Reader) error {
	if errors.Is(err, io.EOF) {
		if _, err = stream.CloseAndRecv(); err == nil {
			err = status.Error(codes.Internal, "the server ended the upload before the file was sent")
		}
	}
	if u.s.cfg.ErrorDrainBytes > 0 {
		_, _ = io.Copy(io.Discard, io.LimitReader(src, u.s.cfg.ErrorDrainBytes))
	}
	return errorFrom(status.Convert(err))
}

// FinishUpload runs when the offset reaches the length. WriteChunk has finished the
// upload then; an empty file (Upload-Length: 0) has had no PATCH, so its stream is
// sent here (and refused by the server as EMPTY_UPLOAD).
func (u *upload) FinishUpload(ctx context.Context) error {
	if u.completed {
		return nil
	}
	return u.finish(ctx)
}

// finish sends a stream with finish_write and no bytes at the committed offset.
func (u *upload) finish(ctx context.Context) error {
	stream, err := u.s.client.UploadVideo(ctx)
	if err != nil {
		return errorFrom(status.Convert(err))
	}
	header := &vidscanv1.UploadHeader{SessionId: u.info.ID, WriteOffset: u.info.Offset}
	if err := stream.Send(&vidscanv1.UploadVideoRequest{Payload: &vidscanv1.UploadVideoRequest_Header{Header: header}}); err != nil {
		return u.streamError(stream, err, strings.NewReader(""))
	}
	if err := stream.Send(&vidscanv1.UploadVideoRequest{FinishWrite: true}); err != nil {
		return u.streamError(stream, err, strings.NewReader(""))
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		return errorFrom(status.Convert(err))
	}
	u.completed = true
	return nil
}

// Terminate is tus termination (DELETE): CancelUploadSession, which stops a stream in
// flight and discards what was stored.
func (u *upload) Terminate(ctx context.Context) error {
	_, err := u.s.client.CancelUploadSession(ctx, &vidscanv1.CancelUploadSessionRequest{SessionId: u.info.ID})
	if err != nil {
		if status.Code(err) == codes.NotFound {
			return handler.ErrNotFound
		}
		return errorFrom(status.Convert(err))
	}
	return nil
}

// errorFrom is a tusd error answered with the gateway's JSON error body, its HTTP
// status (httpStatus[0] when given) and headers (Retry-After, WWW-Authenticate).
func errorFrom(st *status.Status, httpStatus ...int) handler.Error {
	want := 0
	if len(httpStatus) > 0 {
		want = httpStatus[0]
	}
	code, header, body := apierr.Response(want, st)
	h := handler.HTTPHeader{}
	for k := range header {
		if k != "Content-Length" { // tusd sets it from the body
			h[k] = header.Get(k)
		}
	}
	reason := apierr.Reason(st)
	if reason == "" {
		reason = apierr.CodeName(st.Code())
	}
	return handler.Error{
		ErrorCode:    "ERR_" + reason,
		Message:      st.Message(),
		HTTPResponse: handler.HTTPResponse{StatusCode: code, Body: string(body), Header: h},
	}
}
