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

// gather is empty without a gathering write.
type gather struct{}

// sendPieces sends the run made of pieces back to back, flattened into
// flat.
func (c *Conn) sendPieces(_ *gather, pieces [][]byte, seg int, oob []byte, scratch, flat *[]byte, addr net.Addr) error {
	*flat = appendPieces((*flat)[:0], pieces)
	return c.send(*flat, seg, oob, scratch, addr)
}
