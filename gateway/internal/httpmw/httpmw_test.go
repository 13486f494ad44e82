package httpmw

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestRequestID(t *testing.T) {
	var seen string
	h := RequestID(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen = r.Header.Get(RequestIDHeader) }))

	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
	if len(seen) != 36 || w.Header().Get(RequestIDHeader) != seen {
		t.Fatalf("generated %q, echoed %q", seen, w.Header().Get(RequestIDHeader))
	}

	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set(RequestIDHeader, "abc-123")
	w = httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if seen != "abc-123" || w.Header().Get(RequestIDHeader) != "abc-123" {
		t.Fatalf("kept %q, echoed %q", seen, w.Header().Get(RequestIDHeader))
	}

	r = httptest.NewRequest("GET", "/", nil)
	r.Header.Set(RequestIDHeader, "has space")
	h.ServeHTTP(httptest.NewRecorder(), r)
	if seen == "has space" {
		t.Fatal("invalid id must be replaced")
	}
}

func TestCORS(t *testing.T) {
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) })
	h := NewCORS("https://dash.example/, https://other.example").Wrap(next)

	r := httptest.NewRequest("OPTIONS", "/v1/dashboard/upload/s1", nil)
	r.Header.Set("Origin", "https://dash.example")
	r.Header.Set("Access-Control-Request-Method", "POST")
	r.Header.Set("Access-Control-Request-Headers", "authorization, content-type")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != 204 || w.Header().Get("Access-Control-Allow-Origin") != "https://dash.example" ||
		w.Header().Get("Access-Control-Allow-Headers") != "authorization, content-type" {
		t.Fatalf("preflight: %d %v", w.Code, w.Header())
	}

	r = httptest.NewRequest("OPTIONS", "/", nil)
	r.Header.Set("Origin", "https://evil.example")
	r.Header.Set("Access-Control-Request-Method", "POST")
	w = httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != 403 || w.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("disallowed preflight: %d %v", w.Code, w.Header())
	}

	r = httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Origin", "https://other.example")
	w = httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Header().Get("Access-Control-Allow-Origin") != "https://other.example" || w.Header().Get("Access-Control-Expose-Headers") == "" {
		t.Fatalf("simple request: %v", w.Header())
	}

	w = httptest.NewRecorder()
	NewCORS("*").Wrap(next).ServeHTTP(w, r)
	if w.Header().Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("wildcard: %v", w.Header())
	}
	if NewCORS(" , ").Enabled() {
		t.Fatal("empty list must disable CORS")
	}
}
