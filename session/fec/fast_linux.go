//go:build linux

package fec

import (
	"errors"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// Limits of one GSO write: the kernel takes at most 64 segments
// (UDP_MAX_SEGMENTS before Linux 6.x) and one UDP payload's worth of bytes.
const (
	maxGSOSegments = 64
	maxGSOBytes    = 65000
)

// batchSize is how many datagrams one read from the socket takes, as
// quic-go's own batched receive.
const batchSize = 8

// readBufSize holds any datagram of the layer (at most the packet size
// plus Overhead) and the first bytes of a larger unframed one, enough to
// tell a peer with FEC off. groBufSize holds a train of datagrams the
// kernel coalesced (UDP_GRO): at most one UDP payload.
const (
	readBufSize = 2048
	groBufSize  = 1<<16 + readBufSize
)

// enableFast marks c for the fast path when pc is a UDP socket: writes
// carry control messages and, where the socket takes UDP_SEGMENT, batch
// with GSO.
func (c *Conn) enableFast(pc net.PacketConn) {
	u, ok := pc.(*net.UDPConn)
	if !ok {
		return
	}
	c.udp = u
	c.gso.Store(gsoAvailable(u))
}

// gsoAvailable reports whether the socket takes UDP_SEGMENT, unless
// QUIC_GO_DISABLE_GSO (quic-go's own switch) turns GSO off.
func gsoAvailable(u *net.UDPConn) bool {
	return !offloadOff() && control(u, func(fd int) error {
		_, err := unix.GetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_SEGMENT)
		return err
	})
}

// groEnable asks the socket to coalesce what it receives (UDP_GRO, Linux
// 5.0), unless QUIC_GO_DISABLE_GSO turns segmentation offload off.
func groEnable(u *net.UDPConn) bool {
	return !offloadOff() && control(u, func(fd int) error {
		return unix.SetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_GRO, 1)
	})
}

// offloadOff reports whether QUIC_GO_DISABLE_GSO is set true.
func offloadOff() bool {
	off, err := strconv.ParseBool(os.Getenv("QUIC_GO_DISABLE_GSO"))
	return err == nil && off
}

// control runs fn on u's socket and reports whether both worked.
func control(u *net.UDPConn, fn func(fd int) error) bool {
	rc, err := u.SyscallConn()
	if err != nil {
		return false
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return false
	}
	return ferr == nil
}

// PacketConn returns what quic.Transport should get. Over a UDP socket it
// is a connection that offers quic-go what it uses on a *net.UDPConn:
// GSO writes (split into datagrams, framed, and sent again in GSO runs),
// batched reads, ECN and packet-info control messages, and the socket
// options. Otherwise it is c.
//
// It also asks the socket for coalesced receive (UDP_GRO), which quic-go
// does not use: a GSO run of the peer's (or a train the network device
// coalesced) arrives in one piece instead of datagram by datagram, which
// spares the kernel more per datagram than the layer costs (transport.md
// "Cost"); from then on c's ReadFrom reads as the returned connection
// does.
func (c *Conn) PacketConn() net.PacketConn {
	if c.udp == nil {
		return c
	}
	f := &fastConn{Conn: c, bc: ipv4.NewPacketConn(c.udp), msgs: make([]ipv4.Message, batchSize)}
	// Under readMu: no read of c's may take a train for one datagram.
	c.readMu.Lock()
	defer c.readMu.Unlock()
	f.gro = groEnable(c.udp)
	c.read = f.readBatch
	size := readBufSize
	if f.gro {
		size = groBufSize
	}
	for i := range f.msgs {
		f.msgs[i].Buffers = [][]byte{make([]byte, size)}
		f.msgs[i].OOB = make([]byte, 256)
	}
	return f
}

// fastConn is a Conn as quic-go's OOBCapablePacketConn with ReadBatch.
// Reads and writes go through the layer exactly as ReadFrom and WriteTo
// do; only the system calls and control messages differ.
type fastConn struct {
	*Conn
	bc *ipv4.PacketConn

	// Owned under readMu: the read buffers, whether the socket coalesces
	// (gro), and the control messages of a train without its segment
	// size (groOOB).
	msgs   []ipv4.Message
	gro    bool
	groOOB []byte
}

// SyscallConn gives quic-go the socket for its options (buffer sizes,
// DF, ECN and packet-info reception) and the GSO check.
func (f *fastConn) SyscallConn() (syscall.RawConn, error) { return f.udp.SyscallConn() }

// WriteMsgUDP sends b (several datagrams when oob asks for GSO) framed,
// with the other control messages of oob.
func (f *fastConn) WriteMsgUDP(b, oob []byte, addr *net.UDPAddr) (n, oobn int, err error) {
	if f.closed.Load() {
		return 0, 0, net.ErrClosed
	}
	seg, from, to := segmentSize(oob)
	if seg > 0 {
		f.fast.gsoIn.Add(1)
	}
	n, err = f.txPeer(addr).write(b, seg, oob[:from], oob[to:])
	return n, len(oob), err
}

// ReadMsgUDP returns the next datagram, received or rebuilt, with the
// control messages it arrived with.
func (f *fastConn) ReadMsgUDP(b, oob []byte) (n, oobn, flags int, addr *net.UDPAddr, err error) {
	f.readMu.Lock()
	defer f.readMu.Unlock()
	if err := f.waitReady(f.readBatch); err != nil {
		return 0, 0, 0, nil, err
	}
	d := f.popReady()
	n, oobn, flags = copyOut(b, oob, d)
	addr, _ = d.addr.(*net.UDPAddr)
	return n, oobn, flags, addr, nil
}

// ReadBatch fills ms with the datagrams ready, at least one, reading a
// batch from the socket when none is.
func (f *fastConn) ReadBatch(ms []ipv4.Message, _ int) (int, error) {
	f.readMu.Lock()
	defer f.readMu.Unlock()
	if err := f.waitReady(f.readBatch); err != nil {
		return 0, err
	}
	k := 0
	for ; k < len(ms) && f.readyHead < len(f.ready); k++ {
		d := f.popReady()
		m := &ms[k]
		var buf []byte
		if len(m.Buffers) > 0 {
			buf = m.Buffers[0]
		}
		m.N, m.NN, m.Flags = copyOut(buf, m.OOB, d)
		m.Addr = d.addr
	}
	return k, nil
}

// copyOut copies a delivery to a reader's buffers; control messages that
// do not fit are left out whole (MSG_CTRUNC), not cut.
func copyOut(b, oob []byte, d delivery) (n, oobn, flags int) {
	n = copy(b, d.data)
	if n < len(d.data) {
		flags |= unix.MSG_TRUNC
	}
	if len(d.oob) <= len(oob) {
		oobn = copy(oob, d.oob)
	} else {
		flags |= unix.MSG_CTRUNC
	}
	return n, oobn, flags
}

// readBatch reads up to batchSize datagrams from the socket in one system
// call and handles them. A framed datagram cut by the buffer is dropped;
// an unframed one still tells a peer with FEC off.
func (f *fastConn) readBatch() error {
	f.readGen++
	n, err := f.bc.ReadBatch(f.msgs, 0)
	if err != nil {
		return err
	}
	if n > 1 {
		f.fast.batchIn.Add(1)
	}
	now := time.Now()
	for i := range f.msgs[:n] {
		m := &f.msgs[i]
		b := m.Buffers[0][:m.N]
		if m.Flags&unix.MSG_TRUNC != 0 && Framed(b) {
			continue
		}
		oob, seg := m.OOB[:m.NN], 0
		if f.gro {
			oob, seg = f.groSegments(oob)
		}
		if seg <= 0 || seg >= len(b) {
			f.receive(b, m.Addr, oob, now)
			continue
		}
		// A train: datagrams of seg bytes, the last possibly shorter,
		// that all came with the same control messages.
		f.fast.groIn.Add(1)
		for off := 0; off < len(b); off += seg {
			f.receive(b[off:min(off+seg, len(b))], m.Addr, oob, now)
		}
	}
	return nil
}

// groSegments finds the segment size of a coalesced train in oob (0: one
// datagram) and returns oob without it: quic-go gets the control messages
// the datagrams would have had one by one.
func (f *fastConn) groSegments(oob []byte) ([]byte, int) {
	body, from, to := findCmsg(oob, unix.IPPROTO_UDP, unix.UDP_GRO)
	if len(body) < 4 {
		return oob, 0
	}
	f.groOOB = append(append(f.groOOB[:0], oob[:from]...), oob[to:]...)
	return f.groOOB, int(*(*int32)(unsafe.Pointer(&body[0])))
}

// segmentSize finds the UDP_SEGMENT control message in oob: the segment
// size (0: none) and where the message lies, oob[from:to].
func segmentSize(oob []byte) (seg, from, to int) {
	body, from, to := findCmsg(oob, unix.IPPROTO_UDP, unix.UDP_SEGMENT)
	if len(body) < 2 {
		return 0, len(oob), len(oob)
	}
	return int(*(*uint16)(unsafe.Pointer(&body[0]))), from, to
}

// findCmsg finds the control message of level and typ in oob: its body
// (nil: none) and where the whole message lies, oob[from:to].
func findCmsg(oob []byte, level, typ int32) (body []byte, from, to int) {
	for off := 0; off < len(oob); {
		h, body, remainder, err := unix.ParseOneSocketControlMessage(oob[off:])
		if err != nil {
			break
		}
		next := len(oob) - len(remainder)
		if h.Level == level && h.Type == typ {
			return body, off, next
		}
		off = next
	}
	return nil, len(oob), len(oob)
}

// appendSegmentSize appends a UDP_SEGMENT control message of size seg to
// b.
func appendSegmentSize(b []byte, seg int) []byte {
	start := len(b)
	b = append(b, make([]byte, unix.CmsgSpace(2))...)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[start]))
	h.Level = unix.IPPROTO_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	*(*uint16)(unsafe.Pointer(&b[start+unix.CmsgSpace(0)])) = uint16(seg)
	return b
}

// isGSOError reports a write the device cannot segment (EIO: no
// checksum offload, which UDP_SEGMENT needs).
func isGSOError(err error) bool {
	var serr *os.SyscallError
	return errors.As(err, &serr) && serr.Err == unix.EIO
}
