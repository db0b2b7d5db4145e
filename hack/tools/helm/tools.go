//go:build tools

// Package tools keeps the helm command in go.mod; it is never compiled.
package tools

import _ "helm.sh/helm/v4/cmd/helm"
