// Package page serves the upload page at / and its assets under /ui/: a token, a
// file picker, tus uploads that resume by themselves, the verdict and the user's
// recent videos. index.html and style.css are sources; static/app.js is the bundle
// that scripts/build-gateway.sh builds from gateway/web (npm ci + esbuild) and is
// never committed.
package page

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"net/http"
	"strings"
	"time"
)

//go:embed static/index.html static/style.css static/app.js
var static embed.FS

// Matches reports whether path is the page's: "/" or "/ui/…".
func Matches(path string) bool {
	return path == "/" || strings.HasPrefix(path, "/ui/")
}

type asset struct {
	name, contentType string
	body              []byte
	etag              string
}

// Handler serves the page. Everything comes from the binary; nothing is read from disk.
type Handler struct {
	assets map[string]asset
}

// New loads the embedded files once.
func New() (*Handler, error) {
	files := map[string][2]string{
		"/":             {"static/index.html", "text/html; charset=utf-8"},
		"/ui/app.js":    {"static/app.js", "text/javascript; charset=utf-8"},
		"/ui/style.css": {"static/style.css", "text/css; charset=utf-8"},
	}
	h := &Handler{assets: map[string]asset{}}
	for path, f := range files {
		body, err := static.ReadFile(f[0])
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(body)
		h.assets[path] = asset{name: f[0], contentType: f[1], body: body, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
	}
	return h, nil
}

// contentSecurityPolicy keeps the page to its own origin: its script, its style, and
// fetch/XHR to the gateway's API (tus included).
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; " +
	"connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a, ok := h.assets[r.URL.Path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Type", a.contentType)
	hdr.Set("ETag", a.etag)
	hdr.Set("Cache-Control", "no-cache") // revalidated by ETag: a new gateway build shows at once
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "no-referrer")
	if a.name == "static/index.html" {
		hdr.Set("Content-Security-Policy", contentSecurityPolicy)
		hdr.Set("X-Frame-Options", "DENY")
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}
