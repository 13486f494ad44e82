// Command vidscan-gateway is the REST front of vidscan: a grpc-gateway v2 reverse
// proxy to the gRPC server, with a streaming multipart upload route.
//
//	vidscan-gateway [-listen 127.0.0.1:8080] [-upstream 127.0.0.1:50051]
//	                [-max-upload-bytes 524288000] [-cors-origins https://dash.example.com]
//
// Every flag also reads an environment variable ($VIDSCAN_GATEWAY_*, and
// $VIDSCAN_MAX_UPLOAD_BYTES shared with the server); run with -h for the list.
// Once listening it logs `listening on http://HOST:PORT` and, with -addr-file, writes
// HOST:PORT to that file. SIGTERM/SIGINT drain in-flight requests (-shutdown-grace).
// OpenTelemetry tracing is off unless the standard OTEL_* environment turns it on
// (OTEL_TRACES_EXPORTER=otlp|console or an OTEL_EXPORTER_OTLP_*ENDPOINT); see README.
//
//	vidscan-gateway healthcheck [flags]
//
// asks the gateway listening where the same flags/environment say (on 127.0.0.1 when
// it listens on all addresses) for GET /healthz and exits 0 on 200: the container
// image's HEALTHCHECK, which has no shell or curl.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"google.golang.org/grpc"

	"github.com/vidscan/vidscan/gateway/internal/app"
	"github.com/vidscan/vidscan/gateway/internal/config"
	"github.com/vidscan/vidscan/gateway/internal/httpmw"
	"github.com/vidscan/vidscan/gateway/internal/tracing"
	"github.com/vidscan/vidscan/gateway/internal/tus"
	"github.com/vidscan/vidscan/gateway/internal/upload"
)

func main() {
	if err := run(); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "vidscan-gateway:", err)
		os.Exit(2)
	}
}

func run() error {
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		return healthcheck(os.Args[2:])
	}
	cfg, err := config.Parse(os.Args[1:], os.Getenv, os.Stderr)
	if err != nil {
		return err
	}
	if cfg.Version {
		printVersion()
		return nil
	}
	var log *slog.Logger
	if cfg.LogFormat == "json" {
		log = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	} else {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}

	// Tracing is off unless the OTEL_* environment enables it (internal/tracing).
	// Its shutdown is deferred first so that it runs last: buffered spans are
	// flushed after the HTTP server has drained.
	traceShutdown, tracingOn, err := tracing.Setup(context.Background(), log)
	if err != nil {
		return err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), tracing.ShutdownTimeout)
		defer cancel()
		if err := traceShutdown(ctx); err != nil {
			log.Warn("tracing shutdown", "error", err)
		}
	}()

	creds, err := cfg.UpstreamCredentials()
	if err != nil {
		return err
	}
	dialOpts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithUserAgent("vidscan-gateway"),
		// Spread calls over every address the upstream name resolves to (a compose
		// alias or a headless Kubernetes Service naming several replicas); a single
		// address behaves as before. The server's max_connection_age makes the
		// resolver look again, so new replicas are picked up.
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig": [{"round_robin": {}}]}`),
	}
	if tracingOn {
		dialOpts = append(dialOpts, grpc.WithStatsHandler(tracing.ClientStatsHandler()))
	}
	conn, err := grpc.NewClient(cfg.Upstream, dialOpts...)
	if err != nil {
		return fmt.Errorf("upstream %q: %w", cfg.Upstream, err)
	}
	defer conn.Close()

	var httpMetrics *httpmw.Metrics
	if cfg.MetricsListen != "" {
		httpMetrics = httpmw.NewMetrics()
		mln, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			return fmt.Errorf("metrics-listen: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", httpMetrics.Handler())
		msrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = msrv.Serve(mln) }()
		defer msrv.Close()
		log.Info("metrics on http://"+mln.Addr().String()+"/metrics", "addr", mln.Addr().String())
	}

	handler, err := app.New(app.Config{
		Upload: upload.Config{
			MaxUploadBytes:  cfg.MaxUploadBytes,
			MultipartSlack:  cfg.MultipartSlack,
			ChunkBytes:      int(cfg.ChunkBytes),
			MaxFieldBytes:   cfg.MaxFieldBytes,
			IdleTimeout:     cfg.IdleTimeout,
			ErrorDrainBytes: cfg.ErrorDrainBytes,
		},
		Tus: tus.Config{
			MaxUploadBytes:   cfg.MaxUploadBytes,
			ChunkBytes:       int(cfg.ChunkBytes),
			ChecksumMaxBytes: cfg.TusChecksumMax,
			IdleTimeout:      cfg.IdleTimeout,
			ErrorDrainBytes:  cfg.ErrorDrainBytes,
		},
		CORSOrigins: cfg.CORSOrigins,
		AccessLog:   cfg.AccessLog,
		Metrics:     httpMetrics,
		Tracing:     tracingOn,
	}, conn, log)
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	addr := ln.Addr().String()
	if cfg.AddrFile != "" {
		tmp := cfg.AddrFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(addr+"\n"), 0o644); err != nil {
			return err
		}
		if err := os.Rename(tmp, cfg.AddrFile); err != nil {
			return err
		}
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	log.Info("listening on http://"+addr, "addr", addr, "upstream", cfg.Upstream,
		"max_upload_bytes", cfg.MaxUploadBytes, "chunk_bytes", cfg.ChunkBytes, "cors_origins", cfg.CORSOrigins)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down", "grace", cfg.ShutdownGrace)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	return nil
}

func printVersion() {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		fmt.Println("vidscan-gateway (no build info)")
		return
	}
	fmt.Printf("vidscan-gateway %s (%s)\n", bi.Main.Version, bi.GoVersion)
	for _, d := range bi.Deps {
		fmt.Printf("  %s %s\n", d.Path, d.Version)
	}
}

// healthcheck GETs /healthz from the gateway that the flags and environment describe.
func healthcheck(args []string) error {
	cfg, err := config.Parse(args, os.Getenv, os.Stderr)
	if err != nil {
		return err
	}
	host, port, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen address %q: %w", cfg.Listen, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	client := &http.Client{Timeout: 3 * time.Second}
	resp, err := client.Get("http://" + net.JoinHostPort(host, port) + "/healthz")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /healthz: %s", resp.Status)
	}
	return nil
}
