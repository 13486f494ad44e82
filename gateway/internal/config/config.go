// Package config reads the gateway's settings: each flag defaults to an environment
// variable, which defaults to the built-in value. Flags win over the environment.
package config

import (
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

const (
	KiB = 1 << 10
	MiB = 1 << 20

	DefaultListen         = "127.0.0.1:8080"
	DefaultUpstream       = "127.0.0.1:50051"
	DefaultMaxUploadBytes = 500 * MiB // the server's VIDSCAN_MAX_UPLOAD_BYTES default
	DefaultChunkBytes     = 256 * KiB
	DefaultMultipartSlack = 1 * MiB
	DefaultMaxFieldBytes  = 256 * KiB
	DefaultErrorDrain     = 64 * MiB
	// A tus PATCH with Upload-Checksum is held in memory until verified.
	DefaultTusChecksumMax = 16 * MiB
	DefaultIdleTimeout    = 60 * time.Second
	DefaultShutdownGrace  = 30 * time.Second

	// The server refuses gRPC messages above VIDSCAN_MAX_RECEIVE_MESSAGE_BYTES (4 MiB by
	// default); a chunk leaves room for the envelope.
	MinChunkBytes = 1 * KiB
	MaxChunkBytes = 3 * MiB
)

// Config is every setting of the gateway binary.
type Config struct {
	Listen          string
	Upstream        string
	UpstreamCAFile  string // PEM CA that signed the server's certificate: TLS to the upstream
	UpstreamCert    string // PEM client certificate for mTLS (with UpstreamKey)
	UpstreamKey     string
	UpstreamName    string // server name to verify instead of the upstream's host
	MaxUploadBytes  int64
	ChunkBytes      int64
	MultipartSlack  int64
	MaxFieldBytes   int64
	ErrorDrainBytes int64
	TusChecksumMax  int64
	IdleTimeout     time.Duration
	ShutdownGrace   time.Duration
	CORSOrigins     string
	AddrFile        string
	MetricsListen   string // host:port of /metrics; empty: off
	AccessLog       bool
	LogFormat       string
	Version         bool
}

// Env lists the environment variables, by flag name.
var Env = map[string]string{
	"listen":                 "VIDSCAN_GATEWAY_LISTEN",
	"upstream":               "VIDSCAN_GATEWAY_UPSTREAM",
	"upstream-ca-file":       "VIDSCAN_GATEWAY_UPSTREAM_CA_FILE",
	"upstream-cert-file":     "VIDSCAN_GATEWAY_UPSTREAM_CERT_FILE",
	"upstream-key-file":      "VIDSCAN_GATEWAY_UPSTREAM_KEY_FILE",
	"upstream-server-name":   "VIDSCAN_GATEWAY_UPSTREAM_SERVER_NAME",
	"max-upload-bytes":       "VIDSCAN_MAX_UPLOAD_BYTES",
	"chunk-bytes":            "VIDSCAN_GATEWAY_CHUNK_BYTES",
	"multipart-slack-bytes":  "VIDSCAN_GATEWAY_MULTIPART_SLACK_BYTES",
	"max-field-bytes":        "VIDSCAN_GATEWAY_MAX_FIELD_BYTES",
	"error-drain-bytes":      "VIDSCAN_GATEWAY_ERROR_DRAIN_BYTES",
	"tus-checksum-max-bytes": "VIDSCAN_GATEWAY_TUS_CHECKSUM_MAX_BYTES",
	"upload-idle-timeout":    "VIDSCAN_GATEWAY_UPLOAD_IDLE_TIMEOUT",
	"shutdown-grace":         "VIDSCAN_GATEWAY_SHUTDOWN_GRACE",
	"cors-origins":           "VIDSCAN_GATEWAY_CORS_ORIGINS",
	"addr-file":              "VIDSCAN_GATEWAY_ADDR_FILE",
	"metrics-listen":         "VIDSCAN_GATEWAY_METRICS_LISTEN",
	"access-log":             "VIDSCAN_GATEWAY_ACCESS_LOG",
	"log-format":             "VIDSCAN_GATEWAY_LOG_FORMAT",
}

// Parse reads args (without the program name) and the environment through getenv.
func Parse(args []string, getenv func(string) string, stderr io.Writer) (*Config, error) {
	fs := flag.NewFlagSet("vidscan-gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := &Config{}
	var errs []string
	env := func(flagName, def string) string {
		if v := strings.TrimSpace(getenv(Env[flagName])); v != "" {
			return v
		}
		return def
	}
	str := func(p *string, name, def, usage string) {
		fs.StringVar(p, name, env(name, def), usage+" [$"+Env[name]+"]")
	}
	size := func(p *int64, name string, def int64, usage string) {
		v, err := ParseBytes(env(name, strconv.FormatInt(def, 10)))
		if err != nil {
			errs = append(errs, fmt.Sprintf("$%s: %v", Env[name], err))
		}
		*p = v
		fs.Func(name, fmt.Sprintf("%s (default %d) [$%s]", usage, def, Env[name]), func(s string) error {
			n, err := ParseBytes(s)
			*p = n
			return err
		})
	}
	dur := func(p *time.Duration, name string, def time.Duration, usage string) {
		v, err := time.ParseDuration(env(name, def.String()))
		if err != nil {
			errs = append(errs, fmt.Sprintf("$%s: %v", Env[name], err))
		}
		fs.DurationVar(p, name, v, usage+" [$"+Env[name]+"]")
	}

	// The upstream also follows the server's own listen address when both processes
	// share an environment.
	upstreamDefault := DefaultUpstream
	if v := strings.TrimSpace(getenv("VIDSCAN_GRPC_LISTEN")); v != "" {
		upstreamDefault = v
	}
	str(&c.Listen, "listen", DefaultListen, "HTTP listen address (port 0 picks a free port; see -addr-file)")
	str(&c.Upstream, "upstream", upstreamDefault, "upstream gRPC address host:port (or unix:///path); defaults to $VIDSCAN_GRPC_LISTEN, else "+DefaultUpstream)
	str(&c.UpstreamCAFile, "upstream-ca-file", "", "PEM CA bundle: connect to the upstream with TLS, verifying its certificate (empty: plaintext)")
	str(&c.UpstreamCert, "upstream-cert-file", "", "PEM client certificate for mTLS to the upstream (with -upstream-key-file)")
	str(&c.UpstreamKey, "upstream-key-file", "", "PEM key of -upstream-cert-file")
	str(&c.UpstreamName, "upstream-server-name", "", "name the upstream's certificate must carry (default: the upstream's host)")
	size(&c.MaxUploadBytes, "max-upload-bytes", DefaultMaxUploadBytes, "largest file accepted; must equal the server's")
	size(&c.ChunkBytes, "chunk-bytes", DefaultChunkBytes, "bytes per UploadVideo chunk message")
	size(&c.MultipartSlack, "multipart-slack-bytes", DefaultMultipartSlack, "body bytes allowed above max-upload-bytes for the multipart framing and text fields")
	size(&c.MaxFieldBytes, "max-field-bytes", DefaultMaxFieldBytes, "longest multipart text field")
	size(&c.ErrorDrainBytes, "error-drain-bytes", DefaultErrorDrain, "body bytes read and discarded before answering an error mid-upload (so the client sees it)")
	size(&c.TusChecksumMax, "tus-checksum-max-bytes", DefaultTusChecksumMax, "largest tus PATCH body with Upload-Checksum, held in memory until verified (larger ones: 400 CHECKSUM_NOT_SUPPORTED)")
	dur(&c.IdleTimeout, "upload-idle-timeout", DefaultIdleTimeout, "longest wait for more upload body bytes (0 = none)")
	dur(&c.ShutdownGrace, "shutdown-grace", DefaultShutdownGrace, "time given to in-flight requests on SIGTERM/SIGINT")
	str(&c.CORSOrigins, "cors-origins", "", `comma-separated allowed CORS origins, "*" for any; empty disables CORS`)
	str(&c.AddrFile, "addr-file", "", "write the bound host:port to this file once listening")
	str(&c.MetricsListen, "metrics-listen", "", "serve Prometheus /metrics on this host:port (empty: off)")
	accessLog := env("access-log", "true")
	al, err := strconv.ParseBool(accessLog)
	if err != nil {
		errs = append(errs, fmt.Sprintf("$%s: %v", Env["access-log"], err))
	}
	fs.BoolVar(&c.AccessLog, "access-log", al, "log one line per request [$"+Env["access-log"]+"]")
	str(&c.LogFormat, "log-format", "text", "log format on stderr: text or json")
	fs.BoolVar(&c.Version, "version", false, "print the version and module versions, then exit")

	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Sprintf("unexpected arguments: %q", fs.Args()))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return c, c.Validate()
}

// Validate checks ranges.
func (c *Config) Validate() error {
	switch {
	case c.MaxUploadBytes <= 0:
		return fmt.Errorf("max-upload-bytes must be positive, got %d", c.MaxUploadBytes)
	case c.ChunkBytes < MinChunkBytes || c.ChunkBytes > MaxChunkBytes:
		return fmt.Errorf("chunk-bytes must be within [%d, %d], got %d", MinChunkBytes, MaxChunkBytes, c.ChunkBytes)
	case c.TusChecksumMax < 0:
		return fmt.Errorf("tus-checksum-max-bytes must be >= 0, got %d", c.TusChecksumMax)
	case c.MultipartSlack < 0 || c.MaxFieldBytes <= 0 || c.ErrorDrainBytes < 0:
		return fmt.Errorf("multipart-slack-bytes and error-drain-bytes must be >= 0, max-field-bytes > 0")
	case c.MaxFieldBytes > c.MultipartSlack && c.MultipartSlack > 0:
		return fmt.Errorf("max-field-bytes (%d) must not exceed multipart-slack-bytes (%d)", c.MaxFieldBytes, c.MultipartSlack)
	case c.IdleTimeout < 0 || c.ShutdownGrace < 0:
		return fmt.Errorf("durations must not be negative")
	case c.LogFormat != "text" && c.LogFormat != "json":
		return fmt.Errorf("log-format must be text or json, got %q", c.LogFormat)
	case c.Listen == "" || c.Upstream == "":
		return fmt.Errorf("listen and upstream must not be empty")
	case (c.UpstreamCert == "") != (c.UpstreamKey == ""):
		return fmt.Errorf("upstream-cert-file and upstream-key-file go together")
	case c.UpstreamCert != "" && c.UpstreamCAFile == "":
		return fmt.Errorf("upstream-cert-file needs upstream-ca-file (mTLS is TLS)")
	}
	return nil
}

// ParseBytes reads a byte count: a plain integer, or one with a KiB/MiB/GiB (or
// K/M/G, binary) suffix, e.g. "524288000", "500MiB", "256k".
func ParseBytes(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	lower := strings.ToLower(s)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"kib", KiB}, {"mib", MiB}, {"gib", 1 << 30}, {"k", KiB}, {"m", MiB}, {"g", 1 << 30}} {
		if strings.HasSuffix(lower, u.suffix) {
			mult = u.mult
			s = strings.TrimSpace(s[:len(s)-len(u.suffix)])
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("not a byte count: %q", s)
	}
	if n < 0 || (mult > 1 && n > (1<<62)/mult) {
		return 0, fmt.Errorf("byte count out of range: %q", s)
	}
	return n * mult, nil
}
