//go:build linux && amd64

package wan

const sysSetns = 308
