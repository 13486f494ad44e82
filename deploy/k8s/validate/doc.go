// Package validate renders deploy/k8s (kustomize, through its Go module) and decodes
// every object strictly into the official k8s.io/api types, so a misspelt or
// misplaced field fails `go test` instead of a kubectl apply. KEDA's ScaledObject is
// checked against the schema in scaledobject.go (the fields this repo uses).
package validate
