package events

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	vidscanv1 "github.com/vidscan/vidscan/gateway/gen/vidscan/v1"
)

// fakeStream yields the items of its channel; a closed channel is io.EOF.
type fakeStream struct {
	grpc.ClientStream
	ctx   context.Context
	items chan received
}

func (s *fakeStream) Recv() (*vidscanv1.WatchAnalysisResponse, error) {
	select {
	case it, ok := <-s.items:
		if !ok {
			return nil, io.EOF
		}
		return it.msg, it.err
	case <-s.ctx.Done():
		return nil, status.FromContextError(s.ctx.Err()).Err()
	}
}

type fakeWatcher struct {
	mu       sync.Mutex
	ctx      context.Context
	err      error
	items    chan received
	request  *vidscanv1.WatchAnalysisRequest
	canceled chan struct{}
}

func (f *fakeWatcher) WatchAnalysis(ctx context.Context, in *vidscanv1.WatchAnalysisRequest, _ ...grpc.CallOption) (grpc.ServerStreamingClient[vidscanv1.WatchAnalysisResponse], error) {
	f.mu.Lock()
	f.ctx, f.request = ctx, in
	f.mu.Unlock()
	if f.canceled != nil {
		go func() { <-ctx.Done(); close(f.canceled) }()
	}
	if f.err != nil {
		return nil, f.err
	}
	return &fakeStream{ctx: ctx, items: f.items}, nil
}

func analysis(st vidscanv1.AnalysisStatus) received {
	return received{msg: &vidscanv1.WatchAnalysisResponse{Analysis: &vidscanv1.Analysis{AnalysisId: "a1", Status: st}}}
}

func newServer(t *testing.T, f *fakeWatcher, keepalive time.Duration) *httptest.Server {
	t.Helper()
	mux := runtime.NewServeMux(runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.JSONPb{
		MarshalOptions: protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true},
	}))
	h := NewHandler(mux, f, slog.New(slog.NewTextHandler(io.Discard, nil)))
	h.keepalive = keepalive
	if err := mux.HandlePath(http.MethodGet, Pattern, h.ServeHTTP); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

type event struct{ name, id, data string }

// readEvents parses an event stream into events (comments counted apart).
func readEvents(t *testing.T, body io.Reader, stopAfter int) (events []event, comments int) {
	t.Helper()
	scanner := bufio.NewScanner(body)
	var cur event
	var data []string
	for scanner.Scan() {
		line := scanner.Text()
		switch {
		case line == "":
			if cur.name != "" || len(data) > 0 {
				cur.data = strings.Join(data, "\n")
				events = append(events, cur)
				if stopAfter > 0 && len(events) == stopAfter {
					return events, comments
				}
			}
			cur, data = event{}, nil
		case strings.HasPrefix(line, ":"):
			comments++
		case strings.HasPrefix(line, "event: "):
			cur.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "id: "):
			cur.id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "data: "):
			data = append(data, strings.TrimPrefix(line, "data: "))
		}
	}
	return events, comments
}

func TestStreamsEachMessageThenEnds(t *testing.T) {
	items := make(chan received, 3)
	items <- analysis(vidscanv1.AnalysisStatus_ANALYSIS_STATUS_PENDING)
	items <- analysis(vidscanv1.AnalysisStatus_ANALYSIS_STATUS_RUNNING)
	items <- analysis(vidscanv1.AnalysisStatus_ANALYSIS_STATUS_ANALYZED)
	close(items)
	f := &fakeWatcher{items: items}
	srv := newServer(t, f, time.Hour)
	resp, err := http.Get(srv.URL + "/v1/analyses/a1/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("%d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	got, _ := readEvents(t, resp.Body, 0)
	if len(got) != 3 {
		t.Fatalf("events: %+v", got)
	}
	for i, want := range []string{"ANALYSIS_STATUS_PENDING", "ANALYSIS_STATUS_RUNNING", "ANALYSIS_STATUS_ANALYZED"} {
		var body map[string]any
		if err := json.Unmarshal([]byte(got[i].data), &body); err != nil {
			t.Fatal(err)
		}
		if got[i].name != "analysis" || got[i].id != string(rune('1'+i)) || body["status"] != want || body["analysis_id"] != "a1" {
			t.Fatalf("event %d: %+v", i, got[i])
		}
		if _, ok := body["failure_reason"]; !ok {
			t.Fatalf("not the mux's marshaler (proto names, unpopulated fields): %s", got[i].data)
		}
	}
	if f.request.GetAnalysisId() != "a1" {
		t.Fatal(f.request)
	}
}

func TestErrorBeforeFirstEventIsTheJSONErrorBody(t *testing.T) {
	items := make(chan received, 1)
	items <- received{err: status.Error(codes.NotFound, "analysis not found")}
	srv := newServer(t, &fakeWatcher{items: items}, time.Hour)
	resp, err := http.Get(srv.URL + "/v1/analyses/nope/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusNotFound || body["error_code"] != "NOT_FOUND" {
		t.Fatalf("%d %v", resp.StatusCode, body)
	}
}

func TestCallErrorIsTheJSONErrorBody(t *testing.T) {
	srv := newServer(t, &fakeWatcher{err: status.Error(codes.Unavailable, "down")}, time.Hour)
	resp, err := http.Get(srv.URL + "/v1/analyses/a1/events")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatal(resp.StatusCode)
	}
}

func TestErrorAfterFirstEventIsAnErrorEvent(t *testing.T) {
	items := make(chan received, 2)
	items <- analysis(vidscanv1.AnalysisStatus_ANALYSIS_STATUS_PENDING)
	items <- received{err: status.Error(codes.DeadlineExceeded, "deadline")}
	srv := newServer(t, &fakeWatcher{items: items}, time.Hour)
	resp, err := http.Get(srv.URL + "/v1/analyses/a1/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := readEvents(t, resp.Body, 0)
	if len(got) != 2 || got[1].name != "error" || got[1].id != "2" {
		t.Fatalf("%+v", got)
	}
	var body map[string]any
	if err := json.Unmarshal([]byte(got[1].data), &body); err != nil {
		t.Fatal(err)
	}
	if body["error_code"] != "DEADLINE_EXCEEDED" || body["error_message"] != "deadline" {
		t.Fatal(body)
	}
}

func TestKeepaliveAndClientGoingAwayCancelsTheStream(t *testing.T) {
	items := make(chan received, 1)
	items <- analysis(vidscanv1.AnalysisStatus_ANALYSIS_STATUS_PENDING)
	f := &fakeWatcher{items: items, canceled: make(chan struct{})}
	srv := newServer(t, f, 20*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/v1/analyses/a1/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	reader := bufio.NewReader(resp.Body)
	keepalives := 0
	for keepalives < 2 {
		line, err := reader.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == ": keepalive\n" {
			keepalives++
		}
	}
	cancel()
	resp.Body.Close()
	select {
	case <-f.canceled:
	case <-time.After(5 * time.Second):
		t.Fatal("the gRPC stream was not cancelled when the client went away")
	}
}

func TestDeadlineIsAnErrorEventNotASilentEnd(t *testing.T) {
	items := make(chan received, 1)
	items <- analysis(vidscanv1.AnalysisStatus_ANALYSIS_STATUS_PENDING)
	srv := newServer(t, &fakeWatcher{items: items}, time.Hour)
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/analyses/a1/events", nil)
	req.Header.Set("Grpc-Timeout", "50m") // 50 ms
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := readEvents(t, resp.Body, 0)
	if len(got) != 2 || got[1].name != "error" || !strings.Contains(got[1].data, `"DEADLINE_EXCEEDED"`) {
		t.Fatalf("%+v", got)
	}
}
