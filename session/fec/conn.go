package fec

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/reedsolomon"
)

// Config configures a [Conn]. Zero durations take the defaults.
type Config struct {
	GroupSize int // data datagrams per group, 1..MaxGroupSize
	// Repair is the repairs of a full group, 1..MaxRepair; with Auto the
	// most the adaptive policy may choose, 0 for a quarter of the group.
	Repair int
	// Auto is the adaptive mode (transport.fec = "auto"): the receiver
	// reports the loss it measures, and the sender picks each peer's
	// repairs and interleaving depth from the reports (choose).
	Auto bool
	// PacketSize is the size of quic-go's packets before path MTU
	// discovery (quic.Config.InitialPacketSize), chosen so that a repair
	// fits the path. A larger datagram is a path MTU probe; it is sent
	// only padded (tag 0x36) to a peer that reads that, and held back
	// otherwise (txPeer.frameData). 0: no limit.
	PacketSize int
	Logger     *slog.Logger

	FlushIdle time.Duration // a group is idle when no datagram came for this long (see the package doc)
	FlushMax  time.Duration // close a group at the latest this long after its first datagram
	Hold      time.Duration // how long the receiver holds datagrams behind a gap
}

// Validate reports whether c's group size and repair count are usable.
func (c Config) Validate() error {
	if c.GroupSize < 1 || c.GroupSize > MaxGroupSize {
		return fmt.Errorf("fec: group size %d out of range 1..%d", c.GroupSize, MaxGroupSize)
	}
	if c.Auto && c.Repair == 0 {
		return nil
	}
	if c.Repair < 1 || c.Repair > MaxRepair {
		return fmt.Errorf("fec: repair count %d out of range 1..%d", c.Repair, MaxRepair)
	}
	return nil
}

// Conn is a net.PacketConn that adds FEC framing to what it writes and
// removes it from what it reads, rebuilding lost datagrams. Reads are
// serialised (quic-go has one reader); writes to different peers run in
// parallel. Close closes the wrapped connection.
type Conn struct {
	pc  net.PacketConn
	cfg Config
	log *slog.Logger

	closed atomic.Bool

	// Fast path (fast_linux.go): udp is pc when it is a *net.UDPConn that
	// quic-go may drive with GSO, batched receive and ECN (PacketConn);
	// gso is whether writes may batch with UDP_SEGMENT.
	udp *net.UDPConn
	gso atomic.Bool
	// fast counts the fast path at work (tests): GSO writes quic-go
	// handed in, GSO runs sent, socket reads that took several datagrams,
	// trains of datagrams the kernel coalesced (UDP_GRO).
	fast struct{ gsoIn, gsoOut, batchIn, groIn atomic.Uint64 }

	// send side
	txMu sync.Mutex // guards tx (the map, not the peers)
	tx   map[netip.AddrPort]*txPeer

	// receive side: everything below is owned by the goroutine in ReadFrom
	// (under readMu).
	readMu sync.Mutex
	// read is how ReadFrom reads the socket: readOne, or the fast path's
	// readBatch once PacketConn asked the socket to coalesce (only
	// readBatch splits the trains).
	read      func() error
	rbuf      []byte
	curOOB    []byte // control messages of the datagram being handled
	rx        map[netip.AddrPort]*rxPeer
	ready     []delivery // datagrams ready for the reader, in order, from readyHead
	readyHead int
	// readGen numbers the socket reads. The socket is read only when
	// ready is empty, so a delivery made before the current read has
	// been copied out (rxPeer.store).
	readGen uint64
	warned  map[netip.AddrPort]bool

	// deadline guards the read deadline the caller set and the one last
	// set on pc (the earlier of the caller's and a hold's).
	dlMu     sync.Mutex
	userDL   time.Time
	socketDL time.Time

	st struct {
		dataSent, repairSent, dataRecv, repairRecv, recovered, unrecoverable, mismatched atomic.Uint64
		reportSent, reportRecv, askSent, resent, retrieved                               atomic.Uint64
		heldBack                                                                         atomic.Uint64
	}
}

// delivery is a datagram ready for the reader and its control messages:
// the buffers of its slot, not a copy (rxPeer.store).
type delivery struct {
	data, oob []byte
	addr      net.Addr
}

// New wraps pc. The caller must not use pc directly afterwards.
func New(pc net.PacketConn, cfg Config) (*Conn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.FlushIdle <= 0 {
		cfg.FlushIdle = DefaultFlushIdle
	}
	if cfg.FlushMax <= 0 {
		cfg.FlushMax = DefaultFlushMax
	}
	if cfg.Hold <= 0 {
		cfg.Hold = DefaultHold
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Auto && cfg.Repair == 0 {
		cfg.Repair = maxAutoRepair(cfg.GroupSize)
	}
	c := &Conn{
		pc:   pc,
		cfg:  cfg,
		log:  cfg.Logger,
		tx:   map[netip.AddrPort]*txPeer{},
		rx:   map[netip.AddrPort]*rxPeer{},
		rbuf: make([]byte, 65536),
		// 0 is no read: a slot never lent (slot.lentGen) looks unlent.
		readGen: 1,
		warned:  map[netip.AddrPort]bool{},
	}
	c.read = c.readOne
	c.enableFast(pc)
	return c, nil
}

// Stats returns the counters (safe from any goroutine).
func (c *Conn) Stats() Stats {
	return Stats{
		DataSent:       c.st.dataSent.Load(),
		RepairSent:     c.st.repairSent.Load(),
		DataReceived:   c.st.dataRecv.Load(),
		RepairReceived: c.st.repairRecv.Load(),
		Recovered:      c.st.recovered.Load(),
		Unrecoverable:  c.st.unrecoverable.Load(),
		Mismatched:     c.st.mismatched.Load(),

		ReportsSent:     c.st.reportSent.Load(),
		ReportsReceived: c.st.reportRecv.Load(),
		AsksSent:        c.st.askSent.Load(),
		Resent:          c.st.resent.Load(),
		Retrieved:       c.st.retrieved.Load(),
		HeldBack:        c.st.heldBack.Load(),
	}
}

// LocalAddr implements net.PacketConn.
func (c *Conn) LocalAddr() net.Addr { return c.pc.LocalAddr() }

// Close stops the group timers and closes the wrapped connection. Repairs
// of groups still open are not sent.
func (c *Conn) Close() error {
	if c.closed.Swap(true) {
		return c.pc.Close()
	}
	c.txMu.Lock()
	for _, p := range c.tx {
		p.stop()
	}
	c.txMu.Unlock()
	return c.pc.Close()
}

// SetDeadline implements net.PacketConn.
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// SetWriteDeadline implements net.PacketConn.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.pc.SetWriteDeadline(t) }

// SetReadDeadline implements net.PacketConn. It also interrupts a ReadFrom
// that is waiting, as on a socket.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.dlMu.Lock()
	defer c.dlMu.Unlock()
	c.userDL = t
	c.socketDL = t
	return c.pc.SetReadDeadline(t)
}

// SetReadBuffer and SetWriteBuffer pass to the wrapped connection when it
// has them (quic-go sizes the socket buffers through them).
func (c *Conn) SetReadBuffer(n int) error {
	if s, ok := c.pc.(interface{ SetReadBuffer(int) error }); ok {
		return s.SetReadBuffer(n)
	}
	return nil
}

// SetWriteBuffer: see SetReadBuffer.
func (c *Conn) SetWriteBuffer(n int) error {
	if s, ok := c.pc.(interface{ SetWriteBuffer(int) error }); ok {
		return s.SetWriteBuffer(n)
	}
	return nil
}

// readUntil runs read (one read from the socket, which hands what it read
// to receive), waking at hold (zero: none) or at the caller's deadline.
// held reports that it woke for hold.
func (c *Conn) readUntil(hold time.Time, read func() error) (held bool, err error) {
	c.dlMu.Lock()
	eff := c.userDL
	if !hold.IsZero() && (eff.IsZero() || hold.Before(eff)) {
		eff = hold
	}
	if !eff.Equal(c.socketDL) {
		c.socketDL = eff
		if err := c.pc.SetReadDeadline(eff); err != nil {
			c.dlMu.Unlock()
			return false, err
		}
	}
	c.dlMu.Unlock()
	err = read()
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) && !hold.IsZero() {
		c.dlMu.Lock()
		user := c.userDL
		c.dlMu.Unlock()
		if user.IsZero() || time.Now().Before(user) {
			return true, nil
		}
	}
	return false, err
}

// waitReady returns once a datagram is ready for the reader, reading
// from the socket with read as needed. The caller holds readMu.
func (c *Conn) waitReady(read func() error) error {
	for c.readyHead == len(c.ready) {
		hold := c.expireHolds(time.Now())
		if c.readyHead < len(c.ready) {
			break
		}
		if _, err := c.readUntil(hold, read); err != nil {
			return err
		}
	}
	return nil
}

// popReady takes the next ready datagram, valid until the next socket
// read.
func (c *Conn) popReady() delivery {
	d := c.ready[c.readyHead]
	c.ready[c.readyHead] = delivery{}
	c.readyHead++
	if c.readyHead == len(c.ready) {
		c.ready, c.readyHead = c.ready[:0], 0
	}
	return d
}

// ReadFrom implements net.PacketConn: it returns the next QUIC datagram,
// received or rebuilt, without framing.
func (c *Conn) ReadFrom(b []byte) (int, net.Addr, error) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	if err := c.waitReady(c.read); err != nil {
		return 0, nil, err
	}
	d := c.popReady()
	return copy(b, d.data), d.addr, nil
}

// readOne reads one datagram from the socket and handles it.
func (c *Conn) readOne() error {
	c.readGen++
	n, addr, err := c.pc.ReadFrom(c.rbuf)
	if err != nil {
		return err
	}
	c.receive(c.rbuf[:n], addr, nil, time.Now())
	return nil
}

// deliver queues the datagram of s for the reader. The delivery lends
// s's buffers; store does not write into them again within this read.
func (c *Conn) deliver(s *slot, addr net.Addr) {
	c.ready = append(c.ready, delivery{data: s.buf, oob: s.oob, addr: addr})
	s.lentGen = c.readGen
}

// expireHolds gives up the gaps whose hold ended and returns the earliest
// hold still running (zero: none). A receiver that fell behind first reads
// what waits in the socket (the repair may be there), up to three more
// holds.
func (c *Conn) expireHolds(now time.Time) time.Time {
	var next time.Time
	checked, busy := false, false
	for _, p := range c.rx {
		if p.holdUntil.IsZero() {
			continue
		}
		until := p.holdUntil
		if !now.Before(until) {
			if !checked {
				checked, busy = true, queued(c.pc)
			}
			late := until.Add(3 * c.cfg.Hold)
			if busy && now.Before(late) {
				until = late
			} else {
				p.expire(now)
				p.maybeReport(now)
				until = p.holdUntil
			}
		}
		if !until.IsZero() && (next.IsZero() || until.Before(next)) {
			next = until
		}
	}
	return next
}

// receive handles one datagram from the socket, which arrived with the
// control messages oob (nil on the plain path).
func (c *Conn) receive(b []byte, addr net.Addr, oob []byte, now time.Time) {
	c.curOOB = oob
	key := addrKey(addr)
	if !Framed(b) {
		c.mismatch(b, addr, key)
		return
	}
	switch b[0] {
	case tagData, tagPadded:
		seq, payload, ok := parseData(b)
		if !ok {
			return
		}
		p := c.rxPeer(key, addr, now)
		p.data(seq, payload, now)
		p.maybeReport(now)
	case tagRepair, tagInterleaved:
		if len(b) < repairHeaderLen+lenPrefix {
			return
		}
		c.st.repairRecv.Add(1)
		p := c.rxPeer(key, addr, now)
		idx, stride := int(b[7]), 1
		if b[0] == tagInterleaved {
			idx, stride = int(b[7]&0x1F), int(b[7]>>5)+1
		}
		p.repair(be32(b[1:5]), int(b[5]), int(b[6]), idx, stride, b[repairHeaderLen:], now)
		p.maybeReport(now)
	case tagReport:
		if len(b) < reportLen {
			return
		}
		if !c.cfg.Auto {
			c.mismatch(b, addr, key)
			return
		}
		c.st.reportRecv.Add(1)
		rseq, r := parseReport(b)
		var flags byte
		if len(b) >= reportFlagsLen {
			flags = b[reportLen]
		}
		c.txPeer(addr).report(rseq, r, flags, now)
		if flags&flagResends != 0 {
			c.rxPeer(key, addr, now).resends = true
		}
	case tagAsk:
		if !c.cfg.Auto {
			c.mismatch(b, addr, key)
			return
		}
		var buf [maxAsk]uint32
		if seqs := parseAsk(b, buf[:0]); len(seqs) > 0 {
			c.txPeer(addr).resend(seqs)
		}
	default:
		c.mismatch(b, addr, key)
	}
}

// mismatch counts and drops a datagram this version cannot read, logging
// once per peer address.
func (c *Conn) mismatch(b []byte, addr net.Addr, key netip.AddrPort) {
	c.st.mismatched.Add(1)
	if c.warned[key] || len(c.warned) >= 4*maxPeers {
		return
	}
	c.warned[key] = true
	remote := addr.String()
	if len(b) > 0 && !Framed(b) {
		c.log.Warn("dropping datagrams without FEC framing: transport.fec is "+c.mode()+" here but the peer sends plain QUIC (it has transport.fec off?); both ends must set the same transport.fec",
			"remote_addr", remote)
		return
	}
	if b[0] == tagReport {
		// The framing of "on" and "auto" is the same, so traffic flows;
		// only the peer's repairs do not follow the loss measured here.
		c.log.Warn(`ignoring FEC loss reports: the peer has transport.fec = "auto" and this end "on", so the peer's repairs stay at their floor; set both ends to the same transport.fec`,
			"remote_addr", remote)
		return
	}
	c.log.Warn("dropping datagrams with an unknown FEC framing version: the peer runs another ptproxy version; both ends must run the same FEC framing",
		"remote_addr", remote, "tag", fmt.Sprintf("0x%02x", firstByte(b)))
}

// mode is the transport.fec value this Conn runs.
func (c *Conn) mode() string {
	if c.cfg.Auto {
		return "auto"
	}
	return "on"
}

func firstByte(b []byte) byte {
	if len(b) == 0 {
		return 0
	}
	return b[0]
}

func (c *Conn) rxPeer(key netip.AddrPort, addr net.Addr, now time.Time) *rxPeer {
	p := c.rx[key]
	if p == nil {
		if len(c.rx) >= maxPeers {
			var oldest netip.AddrPort
			var at time.Time
			for k, q := range c.rx {
				if at.IsZero() || q.lastSeen.Before(at) {
					oldest, at = k, q.lastSeen
				}
			}
			delete(c.rx, oldest)
		}
		p = newRxPeer(c, addr)
		c.rx[key] = p
	}
	p.lastSeen = now
	return p
}

// WriteTo implements net.PacketConn: it sends b as a data datagram and, when
// b completes a group, the group's repairs.
func (c *Conn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	p := c.txPeer(addr)
	return p.write(b, 0, nil, nil)
}

// send writes b to addr: one datagram, or with seg > 0 datagrams of seg
// bytes (GSO), with the control messages oob (fast path only); scratch
// holds oob plus the segment size between calls. A GSO write the device
// refuses (EIO: no checksum offload) switches GSO off for good and goes
// out one datagram at a time.
func (c *Conn) send(b []byte, seg int, oob []byte, scratch *[]byte, addr net.Addr) error {
	if c.udp == nil {
		_, err := c.pc.WriteTo(b, addr)
		return err
	}
	u, ok := addr.(*net.UDPAddr)
	if !ok {
		return fmt.Errorf("fec: write to %T: not a UDP address", addr)
	}
	// The netip form spares the socket-address allocation of every write.
	ua := u.AddrPort()
	if seg == 0 {
		_, _, err := c.udp.WriteMsgUDPAddrPort(b, oob, ua)
		return err
	}
	*scratch = appendSegmentSize(append((*scratch)[:0], oob...), seg)
	_, _, err := c.udp.WriteMsgUDPAddrPort(b, *scratch, ua)
	if err == nil {
		c.fast.gsoOut.Add(1)
	}
	if err == nil || !isGSOError(err) {
		return err
	}
	if c.gso.Swap(false) {
		c.log.Warn("fec: UDP GSO refused by the network device; sending one datagram per system call", "error", err.Error())
	}
	var first error
	for off := 0; off < len(b); off += seg {
		if _, _, err := c.udp.WriteMsgUDPAddrPort(b[off:min(off+seg, len(b))], oob, ua); err != nil {
			first = cmp.Or(first, err)
		}
	}
	return first
}

func (c *Conn) txPeer(addr net.Addr) *txPeer {
	key := addrKey(addr)
	now := time.Now()
	c.txMu.Lock()
	defer c.txMu.Unlock()
	p := c.tx[key]
	if p == nil {
		if len(c.tx) >= maxPeers {
			var oldest netip.AddrPort
			var at int64
			first := true
			for k, q := range c.tx {
				if u := q.lastUse.Load(); first || u < at {
					oldest, at, first = k, u, false
				}
			}
			c.tx[oldest].stop()
			delete(c.tx, oldest)
		}
		p = newTxPeer(c, addr)
		c.tx[key] = p
	}
	p.lastUse.Store(now.UnixNano())
	return p
}

// addrKey maps a UDP address to a map key; other address types share the
// zero key. IPv4-mapped IPv6 addresses are unmapped: a dual-stack socket
// reads the peer as ::ffff:a.b.c.d while quic-go writes to the a.b.c.d it
// dialed, and a loss report read from the one must reach the sender
// writing to the other.
func addrKey(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	if u, ok := a.(*net.UDPAddr); ok {
		ap = u.AddrPort()
	} else if a != nil {
		var err error
		if ap, err = netip.ParseAddrPort(a.String()); err != nil {
			return netip.AddrPort{}
		}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func be16(b []byte) uint16 { return uint16(b[0])<<8 | uint16(b[1]) }

func be32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// codecs caches Reed-Solomon encoders by (data, parity) shard counts. Each
// peer state owns one, so no encoder is shared between goroutines.
type codecs map[uint16]reedsolomon.Encoder

func (m codecs) get(n, r int) (reedsolomon.Encoder, error) {
	k := uint16(n)<<8 | uint16(r)
	if e := m[k]; e != nil {
		return e, nil
	}
	e, err := reedsolomon.New(n, r, reedsolomon.WithMaxGoroutines(1))
	if err != nil {
		return nil, err
	}
	m[k] = e
	return e, nil
}
