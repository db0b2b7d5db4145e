//go:build tools

// Package tools keeps the descheduler in go.mod; it is never compiled.
package tools

import _ "sigs.k8s.io/descheduler/cmd/descheduler"
