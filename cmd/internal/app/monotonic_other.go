//go:build !linux

package app

// monotonicUsec is 0 where there is no systemd: RELOADING=1 goes without
// MONOTONIC_USEC.
func monotonicUsec() int64 { return 0 }
