//go:build !linux

package fec

import "net"

// queued: without FIONREAD a backlog is not seen; holds end by time only.
func queued(net.PacketConn) bool { return false }
