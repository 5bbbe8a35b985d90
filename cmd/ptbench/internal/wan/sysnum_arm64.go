//go:build linux && arm64

package wan

const sysSetns = 268
