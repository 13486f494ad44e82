package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// UpstreamCredentials are the transport credentials of the channel to the vidscan
// server: TLS verified against UpstreamCAFile (with a client certificate for mTLS
// when UpstreamCert is set), or plaintext when no CA is configured.
func (c *Config) UpstreamCredentials() (credentials.TransportCredentials, error) {
	if c.UpstreamCAFile == "" {
		return insecure.NewCredentials(), nil
	}
	pem, err := os.ReadFile(c.UpstreamCAFile)
	if err != nil {
		return nil, fmt.Errorf("upstream-ca-file: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("upstream-ca-file %s: no PEM certificate in it", c.UpstreamCAFile)
	}
	conf := &tls.Config{RootCAs: roots, ServerName: c.UpstreamName, MinVersion: tls.VersionTLS12}
	if c.UpstreamCert != "" {
		pair, err := tls.LoadX509KeyPair(c.UpstreamCert, c.UpstreamKey)
		if err != nil {
			return nil, fmt.Errorf("upstream client certificate: %w", err)
		}
		conf.Certificates = []tls.Certificate{pair}
	}
	return credentials.NewTLS(conf), nil
}
