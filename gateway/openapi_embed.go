// Package gateway holds the files that the build generates into gen/ and that the
// binary embeds. Run ../scripts/build-gateway.sh (or --gen-only) before `go build`.
package gateway

import _ "embed"

// OpenAPIv2 is the document protoc-gen-openapiv2 generated from protos/vidscan
// (buf.gen.go.yaml); internal/openapi adapts it before it is served at /openapi.json.
//
//go:embed gen/openapiv2/vidscan.swagger.json
var OpenAPIv2 []byte
