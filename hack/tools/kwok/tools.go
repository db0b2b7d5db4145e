//go:build tools

// Package tools keeps the kwok command in go.mod; it is never compiled.
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
