//go:build tools

// Package tools keeps the Kueue controller manager in go.mod; it is never compiled.
package tools

import _ "sigs.k8s.io/kueue/cmd/kueue"
