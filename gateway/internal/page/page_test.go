package page

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func serve(t *testing.T, method, path string, header http.Header) *httptest.ResponseRecorder {
	t.Helper()
	h, err := New()
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest(method, path, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestPageAndAssets(t *testing.T) {
	rec := serve(t, http.MethodGet, "/", nil)
	if rec.Code != http.StatusOK || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Fatalf("CSP: %q", csp)
	}
	if !strings.Contains(rec.Body.String(), `src="/ui/app.js"`) {
		t.Fatal("the page does not load its bundle")
	}
	js := serve(t, http.MethodGet, "/ui/app.js", nil)
	if js.Code != http.StatusOK || !strings.HasPrefix(js.Header().Get("Content-Type"), "text/javascript") || js.Body.Len() == 0 {
		t.Fatalf("GET /ui/app.js: %d %q %d bytes", js.Code, js.Header().Get("Content-Type"), js.Body.Len())
	}
	again := serve(t, http.MethodGet, "/ui/app.js", http.Header{"If-None-Match": {js.Header().Get("ETag")}})
	if again.Code != http.StatusNotModified {
		t.Fatalf("revalidation: %d", again.Code)
	}
	if rec := serve(t, http.MethodGet, "/ui/../../etc/passwd", nil); rec.Code != http.StatusNotFound {
		t.Fatalf("unknown asset: %d", rec.Code)
	}
	if rec := serve(t, http.MethodPost, "/", nil); rec.Code != http.StatusMethodNotAllowed {
		t.Fatalf("POST /: %d", rec.Code)
	}
}

func TestMatches(t *testing.T) {
	for path, want := range map[string]bool{"/": true, "/ui/app.js": true, "/v1/videos": false, "/healthz": false, "/uix": false} {
		if Matches(path) != want {
			t.Errorf("Matches(%q) = %v", path, !want)
		}
	}
}
