package httpmw

import (
	"net/http/httptest"
	"testing"
)

func TestTraced(t *testing.T) {
	for path, want := range map[string]bool{
		"/healthz": false, "/healthz?service=x": false, "/metrics": false,
		"/v1/videos/v1": true, "/openapi.json": true, "/healthzz": true,
	} {
		if got := Traced(httptest.NewRequest("GET", path, nil)); got != want {
			t.Errorf("Traced(%s) = %v, want %v", path, got, want)
		}
	}
}

func TestSpanMethod(t *testing.T) {
	for m, want := range map[string]string{"GET": "GET", "POST": "POST", "DELETE": "DELETE", "OPTIONS": "OPTIONS", "BREW": "HTTP", "get": "HTTP"} {
		if got := spanMethod(m); got != want {
			t.Errorf("spanMethod(%q) = %q, want %q", m, got, want)
		}
	}
}
