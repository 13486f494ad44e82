package config

import (
	"io"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestDefaults(t *testing.T) {
	c, err := Parse(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:8080" || c.Upstream != "127.0.0.1:50051" || c.MaxUploadBytes != 500*MiB ||
		c.ChunkBytes != 256*KiB || c.CORSOrigins != "" || !c.AccessLog || c.IdleTimeout != time.Minute {
		t.Fatalf("%+v", c)
	}
}

func TestEnvAndFlags(t *testing.T) {
	e := env(map[string]string{
		"VIDSCAN_MAX_UPLOAD_BYTES":            "1048576",
		"VIDSCAN_GATEWAY_UPSTREAM":            "10.0.0.1:1",
		"VIDSCAN_GRPC_LISTEN":                 "127.0.0.1:9999",
		"VIDSCAN_GATEWAY_CORS_ORIGINS":        "https://a.example, https://b.example",
		"VIDSCAN_GATEWAY_UPLOAD_IDLE_TIMEOUT": "5s",
		"VIDSCAN_GATEWAY_ACCESS_LOG":          "false",
	})
	c, err := Parse([]string{"-listen", "127.0.0.1:0", "-chunk-bytes", "64KiB"}, e, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxUploadBytes != MiB || c.Upstream != "10.0.0.1:1" || c.Listen != "127.0.0.1:0" || c.ChunkBytes != 64*KiB ||
		c.IdleTimeout != 5*time.Second || c.AccessLog || c.CORSOrigins != "https://a.example, https://b.example" {
		t.Fatalf("%+v", c)
	}
	c, _ = Parse([]string{"-max-upload-bytes", "2048"}, e, io.Discard)
	if c.MaxUploadBytes != 2048 {
		t.Fatalf("flag must win over env: %d", c.MaxUploadBytes)
	}
	c, _ = Parse(nil, env(map[string]string{"VIDSCAN_GRPC_LISTEN": "127.0.0.1:9999"}), io.Discard)
	if c.Upstream != "127.0.0.1:9999" {
		t.Fatalf("upstream follows VIDSCAN_GRPC_LISTEN: %s", c.Upstream)
	}
}

func TestInvalid(t *testing.T) {
	for _, c := range []struct {
		args []string
		env  map[string]string
	}{
		{nil, map[string]string{"VIDSCAN_MAX_UPLOAD_BYTES": "lots"}},
		{nil, map[string]string{"VIDSCAN_MAX_UPLOAD_BYTES": "0"}},
		{[]string{"-chunk-bytes", "8MiB"}, nil},
		{[]string{"-log-format", "xml"}, nil},
		{[]string{"extra"}, nil},
	} {
		if _, err := Parse(c.args, env(c.env), io.Discard); err == nil {
			t.Errorf("%v %v: accepted", c.args, c.env)
		}
	}
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"524288000": 500 * MiB, "500MiB": 500 * MiB, "256k": 256 * KiB, "1 GiB": 1 << 30, "0": 0} {
		if got, err := ParseBytes(in); err != nil || got != want {
			t.Errorf("%q: %d %v", in, got, err)
		}
	}
	for _, in := range []string{"", "-1", "1.5M", "MiB"} {
		if _, err := ParseBytes(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}
