package tus

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tus/tusd/v2/pkg/handler"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestIntentFromUploadMetadata(t *testing.T) {
	info := handler.FileInfo{Size: 42, MetaData: handler.MetaData{
		"name": "clip.mp4", "type": "video/mp4", "model": "frame_cnn",
		"sha256": strings.Repeat("AB", 32), "metadata": `{"camera":"phone","takes":3}`,
		"callback_url": "https://hooks.example/x",
	}}
	intent, err := intentOf(info)
	if err != nil {
		t.Fatal(err)
	}
	if intent.GetFilename() != "clip.mp4" || intent.GetContentType() != "video/mp4" || intent.GetModel() != "frame_cnn" {
		t.Fatalf("names: %v", intent)
	}
	if intent.GetDeclaredSha256() != strings.Repeat("ab", 32) || intent.GetDeclaredSize() != 42 {
		t.Fatalf("declared: %v", intent)
	}
	if got := intent.GetMetadata().AsMap(); got["camera"] != "phone" || got["takes"] != float64(3) {
		t.Fatalf("metadata: %v", got)
	}
	// filename/filetype win over the Uppy spellings.
	info.MetaData["filename"], info.MetaData["filetype"] = "a.mov", "video/quicktime"
	if intent, _ = intentOf(info); intent.GetFilename() != "a.mov" || intent.GetContentType() != "video/quicktime" {
		t.Fatalf("precedence: %v", intent)
	}
	for _, bad := range []string{`[1,2]`, `{"a":`, `"text"`} {
		info.MetaData["metadata"] = bad
		_, err := intentOf(info)
		var tusErr handler.Error
		if !errors.As(err, &tusErr) || tusErr.HTTPResponse.StatusCode != http.StatusBadRequest {
			t.Fatalf("metadata %q: %v", bad, err)
		}
		var body map[string]any
		if err := json.Unmarshal([]byte(tusErr.HTTPResponse.Body), &body); err != nil || body["error_code"] != "INVALID_FIELD" {
			t.Fatalf("metadata %q: body %s", bad, tusErr.HTTPResponse.Body)
		}
	}
}

func TestServerErrorsKeepTheRESTBodyAndHeaders(t *testing.T) {
	st := status.New(codes.Unauthenticated, "no token")
	e := errorFrom(st)
	if e.HTTPResponse.StatusCode != http.StatusUnauthorized || e.HTTPResponse.Header["Www-Authenticate"] != "Bearer" {
		t.Fatalf("%+v", e.HTTPResponse)
	}
	if _, ok := e.HTTPResponse.Header["Content-Length"]; ok {
		t.Fatal("tusd sets Content-Length from the body")
	}
	if gone := errGone("expired").(handler.Error); gone.HTTPResponse.StatusCode != http.StatusGone {
		t.Fatalf("%+v", gone)
	}
}

func checksumRequest(t *testing.T, body []byte, header string) (*httptest.ResponseRecorder, *http.Request, bool) {
	t.Helper()
	r := httptest.NewRequest(http.MethodPatch, "/v1/tus/x", strings.NewReader(string(body)))
	r.Header.Set("Upload-Checksum", header)
	w := httptest.NewRecorder()
	ok := verifyChecksum(w, r, 1024, time.Second)
	return w, r, ok
}

func sum(body []byte) string {
	s := sha256.Sum256(body)
	return base64.StdEncoding.EncodeToString(s[:])
}

func TestChecksumIsVerifiedBeforeTheBodyGoesOn(t *testing.T) {
	body := []byte("some bytes of a video")
	w, r, ok := checksumRequest(t, body, "sha256 "+sum(body))
	if !ok {
		t.Fatalf("refused a matching checksum: %d %s", w.Code, w.Body)
	}
	if got, _ := io.ReadAll(r.Body); string(got) != string(body) {
		t.Fatalf("body passed on: %q", got)
	}
	cases := map[string]struct {
		body   []byte
		header string
		code   int
		reason string
	}{
		"mismatch":  {body, "sha256 " + sum([]byte("other")), 460, "CHECKSUM_MISMATCH"},
		"sha1":      {body, "sha1 " + sum(body), 400, "CHECKSUM_NOT_SUPPORTED"},
		"not b64":   {body, "sha256 ***", 400, "INVALID_FIELD"},
		"too large": {make([]byte, 2048), "sha256 " + sum(make([]byte, 2048)), 400, "CHECKSUM_NOT_SUPPORTED"},
	}
	for name, c := range cases {
		w, _, ok := checksumRequest(t, c.body, c.header)
		var got map[string]any
		_ = json.Unmarshal(w.Body.Bytes(), &got)
		if ok || w.Code != c.code || got["error_code"] != c.reason {
			t.Errorf("%s: ok=%v %d %v", name, ok, w.Code, got)
		}
	}
}

func TestOptionsAdvertiseChecksumAndMaxSize(t *testing.T) {
	rec := httptest.NewRecorder()
	a := &advertising{ResponseWriter: rec, maxSize: 500}
	a.Header().Set("Tus-Extension", "creation,termination")
	a.WriteHeader(http.StatusNoContent)
	h := rec.Header()
	if h.Get("Tus-Extension") != "creation,termination,checksum" || h.Get("Tus-Checksum-Algorithm") != "sha256" || h.Get("Tus-Max-Size") != "500" {
		t.Fatalf("%v", h)
	}
	plain := httptest.NewRecorder()
	(&advertising{ResponseWriter: plain, maxSize: 500}).WriteHeader(http.StatusOK)
	if plain.Header().Get("Tus-Max-Size") != "" {
		t.Fatal("only OPTIONS answers (those with Tus-Extension) advertise")
	}
}

func TestMatches(t *testing.T) {
	for path, want := range map[string]bool{
		"/v1/tus": true, "/v1/tus/": true, "/v1/tus/abc": true,
		"/v1/tusx": false, "/v1/dashboard/upload/abc": false, "/": false,
	} {
		if Matches(path) != want {
			t.Errorf("Matches(%q) != %v", path, want)
		}
	}
}
