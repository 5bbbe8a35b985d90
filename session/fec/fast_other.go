//go:build !linux

package fec

import "net"

// Without Linux's UDP_SEGMENT and recvmmsg the layer keeps the plain
// path: one datagram per system call.
const (
	maxGSOSegments = 1
	maxGSOBytes    = 0
)

func (c *Conn) enableFast(net.PacketConn) {}

// PacketConn returns c: quic-go reads and writes one datagram at a time.
func (c *Conn) PacketConn() net.PacketConn { return c }

func appendSegmentSize(b []byte, _ int) []byte { return b }

func isGSOError(error) bool { return false }
