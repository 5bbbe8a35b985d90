// Package fec is a forward-error-correction layer for UDP datagrams, placed
// between a socket and quic.Transport (transport.fec = "on" or "auto").
//
// quic-go reads every lost packet as congestion; on a link with random loss
// its window collapses and a bulk transfer never reaches the link's rate.
// This layer makes most random losses invisible to QUIC: the sender adds
// Reed-Solomon repair datagrams to each group of outgoing datagrams, and the
// receiver rebuilds lost datagrams before quic-go reads them.
//
// # Framing (version 4)
//
// Every datagram on the wire starts with a tag byte whose two high bits are
// 0, so it can never be taken for a QUIC packet (RFC 9000 17.2 and 17.3 set
// the fixed bit 0x40; quic-go hands such datagrams to
// Transport.ReadNonQUICPacket instead):
//
//	data:        0x31 | seq u32 | QUIC datagram
//	repair:      0x32 | first u32 | n u8 | r u8 | idx u8 | RS shard
//	report:      0x33 | rseq u16 | count u16 | lost u16 | burst u16 [| flags u8]
//	interleaved: 0x34 | first u32 | n u8 | r u8 | (stride-1)<<5 | idx | RS shard
//	request:     0x35 | count u8 | seq u32 × count
//	padded data: 0x36 | seq u32 | 5 zero bytes | QUIC datagram
//
// seq numbers every data datagram sent to one peer, starting at a random
// value. A group is the n consecutive datagrams first..first+n-1; its r
// repairs are the parity shards of Reed-Solomon over n data shards, where
// data shard i is the 2-byte big-endian length of datagram first+i, the
// datagram, and zeros up to the group's longest datagram plus 2. A repair is
// therefore at most [Overhead] bytes larger than the largest datagram of its
// group; a data datagram is 5 bytes larger than the QUIC datagram. An
// interleaved repair (0x34) is the same over the group of the n datagrams
// first, first+stride, ..., first+(n-1)*stride (stride 2..8 in the top 3
// bits of its index byte, idx < 32 in the low 5). A report (0x33) goes the
// other way, from the receiver of data to its sender: of the last count
// data datagrams (in seq order) the link lost lost, and the recent runs of
// consecutive losses (the last 16, each counted as at most 8) were
// burst/256 datagrams long on average (0: fewer than 3 runs seen); rseq
// numbers the reports to one peer. The flags byte (framing version 3)
// has bit 0 set when the report's sender keeps its history and answers
// requests, bit 1 (version 4) when it reads padded data; a version-2
// receiver reads the first 9 bytes and ignores it. A request (0x35,
// version 3) goes from the receiver of data to its sender: send these data
// datagrams again. Padded data (0x36, version 4) is a data datagram exactly
// as long as a repair of a full group of datagrams its size: an "auto"
// sender sends all its data so once the peer's reports carry bit 1, so
// that data and repairs of full-size packets share GSO runs and a path MTU
// probe that gets through proves its size for the repairs; before that it
// sends nothing larger than Config.PacketSize (quic-go's probes are
// dropped, and quic-go keeps its size). Other tag values in 0x00-0x3F are
// reserved for later versions.
//
// Version 1 had tags 0x31 and 0x32 only; "on" still sends exactly those,
// so an "on" end of this version and a version-1 end interoperate. Both
// modes of this version read all five tags. A version-1 receiver drops
// 0x33 and 0x34 with its WARN about an unknown framing version: an "auto"
// peer needs this version.
//
// # Groups (sender)
//
// A group is closed, and its repairs sent, when it holds Config.GroupSize
// datagrams, when the sender went idle, or at the latest Config.FlushMax
// after its first datagram: a small request never waits for a full group.
// Idle is seen by the group timer, armed Config.FlushIdle after a group
// opens when it is not armed already (a lone burst, nothing sent for half
// of FlushIdle when it fires, is closed then), or by the next datagram
// after FlushIdle of silence (the old group's repairs go out with it).
// While datagrams keep coming the timer fires about once per FlushMax
// rather than once per group: arming and firing it cost a thread wake-up
// each on a quiet host, 7% of the CPU of a small request (c1) on loopback. A full group gets Config.Repair repairs (in
// the adaptive mode the count the reports call for), a group cut short
// ceil(Repair*n/GroupSize), at least one, raised towards the fewest with
// which it loses data at most once in 10^4 groups at the reported loss
// (adaptive mode) or at the loss the fixed setting is made for ("on"),
// as far as a budget of such extra repairs allows: Repair/GroupSize per
// data datagram sent plus one per 10 ms, up to 32 saved (policy.go,
// chooseShort; send.go, spendExtra).
//
// # Adaptive mode (receiver reports, sender follows)
//
// With Config.Auto the receiver counts each peer's data datagrams as they
// pass in seq order, as received or lost (rebuilt or given up; a run of
// consecutive losses counts as at most 8, as longer runs are beyond any
// repair count), over the last 1024 to 1152 datagrams, and over the last
// 128 to 256 when those hold 3 or more runs at twice the rate, so that
// loss that begins is reported at once and loss that ends fades out over
// the longer window. It also keeps the lengths of the last 16 runs and
// reports their mean as the burst when their median is 2 or more (else
// 1: random loss with a queue overflowing now and then is not bursty).
// While the peer's data flows it reports at most every 50 ms, every 10 ms
// when it counted a loss since the last report. The sender follows the
// newest report (older and duplicated ones are ignored, unless far older:
// the peer restarted): it takes the rate plus one standard deviation and
// picks the repairs of a full group, the fewest that keep the expected
// residual loss at or below 1e-4 (policy.go), between a floor of 1 and
// Config.Repair; before any report it sends the floor. Repairs and depth
// rise at once and fall only after reports called for less for 1 s. Once
// the loss it follows has been zero for 1 s, a full group holds twice
// GroupSize datagrams (at most 128) with the floor's one repair, until a
// report shows loss (send.go, span).
//
// When the losses come in runs (burst b >= 1.5) the sender also
// interleaves: it collects a block of up to depth×GroupSize datagrams,
// depth = ceil(2b) up to 8, and at flush lays it out in depth groups,
// datagram i of the block in group i mod depth, so a run of up to
// r×depth losses costs no group more than its r repairs. An interleaved
// group keeps all r repairs however few datagrams it holds, and the
// repairs go out round-robin over the groups. Such a block closes when
// full or FlushMax after its first datagram, not after FlushIdle (paced
// traffic would form blocks of one or two datagrams, each repair right
// behind its data); only the repairs wait, within the receiver's hold. A
// block too sparse for at least 4 datagrams per group (a small request, a
// burst of acknowledgements) is one plain group. Repairs of a group of
// consecutive datagrams keep tag 0x32.
//
// # Recovery (receiver)
//
// The receiver delivers datagrams in seq order. After a gap it holds the
// later datagrams until the gap is filled (by a late arrival or a rebuilt
// datagram) or for at most Config.Hold, then gives the gap up and delivers
// what it held: quic-go declares a packet lost once three later ones are
// acknowledged, so handing it datagrams past a gap that FEC is about to fill
// would still shrink its window. Reordering is smoothed the same way;
// duplicates are dropped. A datagram that arrives or is rebuilt after its gap
// was given up is still delivered. State is bounded: a window of 1024
// datagrams and at most 16 peers, the least recently heard one evicted;
// in the adaptive mode the sender also keeps its last 1024 data datagrams
// per peer (about 1.5 MB: buffers of the largest packet, which also serve
// as the groups' shards) for requests.
//
// # Resending on request (adaptive mode)
//
// When the hold of a gap ends and the peer's reports carry the resend
// flag, the receiver asks for the datagrams missing behind next (0x35)
// and holds the gap once more, for the measured time from a request to
// the datagram it brought plus four deviations (250 ms before the first
// measurement); only then does it give the gap up. It asks at most once
// per such wait, and only when at most 80 datagrams arrived behind the gap
// during its hold and at most 2 of them are missing: a loss the repairs
// could not rebuild at a small window (a session's first round trips,
// short groups) would set quic-go's slow-start threshold for the session,
// while a dense flow means a large window (a held round trip costs more
// than the loss) and clustered losses a queue overflowing, which quic-go
// must see (resend.go, askMaxSpan). The sender keeps the last 1024 data datagrams it sent
// to each peer and sends each again at most twice. A datagram that came
// again counts as lost in the loss meter (the link lost it).
//
// # Mismatch
//
// Both ends must run the layer. A Conn that receives a datagram without FEC
// framing (a QUIC packet from a peer with FEC off) or with an unknown tag
// logs one WARN per peer address, counts it in Stats.Mismatched and drops
// it; the handshake then fails by timeout with that line in the log.
//
// "on" and "auto" share the data and repair framing, so traffic flows
// between them, but the "on" end sends no reports: it drops the "auto"
// end's reports (counted in Stats.Mismatched) with one WARN per peer, and
// the "auto" end warns once per peer when 4096 data datagrams went out
// without a report; its repairs then stay at the floor. An "auto" end of
// version 2 sends reports without flags and is never asked to resend; one
// of version 2 or 3 never gets padded data.
//
// # Cost
//
// Over a *net.UDPConn, [Conn.PacketConn] gives quic-go GSO, batched
// receive, ECN and the socket options (fast_linux.go), and reads from a
// socket that coalesces (UDP_GRO) what quic-go would read datagram by
// datagram; otherwise quic-go sees a plain net.PacketConn. The caller
// fixes quic-go's starting packet size (quic.Config.InitialPacketSize,
// Config.PacketSize) so that a packet plus [Overhead] fits the path, and
// lets quic-go's path MTU discovery run only in the adaptive mode (padded
// data above).
//
// Framing is not authenticated: an off-path attacker who can spoof the
// peer's address can disturb recovery, but QUIC's packet protection still
// rejects anything that is not the peer's.
package fec

import (
	"encoding/binary"
	"time"
)

// Wire constants of framing version 1.
const (
	tagData   = 0x31
	tagRepair = 0x32
	// Added in version 2 (adaptive mode); version 1 drops them as an
	// unknown version.
	tagReport      = 0x33
	tagInterleaved = 0x34
	// Added in version 4: a data datagram padded to the size of a repair
	// of a full group of datagrams its size (txPeer.queueData). Sent only
	// to a peer whose reports carry flagPadded.
	tagPadded = 0x36

	dataHeaderLen   = 1 + 4
	paddedHeaderLen = Overhead // tag, seq, 5 zero bytes
	repairHeaderLen = 1 + 4 + 1 + 1 + 1
	lenPrefix       = 2

	// Overhead is the most a repair datagram exceeds the largest datagram
	// of its group by (its header and the length prefix of the shard). A
	// data datagram exceeds its payload by 5 bytes.
	Overhead = repairHeaderLen + lenPrefix

	// MaxGroupSize and MaxRepair bound Config.GroupSize and Config.Repair
	// (the header carries them in one byte; Reed-Solomon over GF(2^8)
	// allows 256 shards).
	MaxGroupSize = 128
	MaxRepair    = 32

	// window is how many datagrams (by seq) of one peer the receiver keeps
	// for recovery and reordering.
	window = 1024
	// maxPeers bounds the per-address state of each direction.
	maxPeers = 16
	// maxPending bounds the groups waiting for data or repairs per peer.
	maxPending = 64
	// resyncDistance: a seq this far from the window restarts the peer's
	// receive state (the peer restarted and picked a new random seq).
	resyncDistance = 1 << 20
	// resyncAfterOld: this many consecutive too-old datagrams also do.
	resyncAfterOld = 64
)

// Default timing of groups and of the receiver's hold.
const (
	DefaultFlushIdle = time.Millisecond
	DefaultFlushMax  = 4 * time.Millisecond
	DefaultHold      = 12 * time.Millisecond
)

// Defaults of Config.GroupSize and Config.Repair (transport.fec_group_size,
// transport.fec_repair).
const (
	DefaultGroupSize = 16
	DefaultRepair    = 2
)

// Framed reports whether b starts like a datagram of this layer (any
// version): a socket without the layer uses it to recognise a peer that has
// FEC on.
func Framed(b []byte) bool { return len(b) > 0 && b[0] < 0x40 && b[0]&0xF0 == 0x30 }

// repairCount is the number of repairs of a group of n datagrams.
func repairCount(n, groupSize, repair int) int {
	return max(1, (repair*n+groupSize-1)/groupSize)
}

func putData(dst []byte, seq uint32) {
	dst[0] = tagData
	binary.BigEndian.PutUint32(dst[1:5], seq)
}

// parseData reads a data datagram (tag 0x31, or 0x36 padded): its seq
// and the QUIC datagram it carries. ok is false for any other datagram.
func parseData(b []byte) (seq uint32, payload []byte, ok bool) {
	hdr := dataHeaderLen
	switch {
	case len(b) == 0:
		return 0, nil, false
	case b[0] == tagPadded:
		hdr = paddedHeaderLen
	case b[0] != tagData:
		return 0, nil, false
	}
	if len(b) < hdr {
		return 0, nil, false
	}
	return be32(b[1:5]), b[hdr:], true
}

// putPadded writes a padded data header (tag 0x36, seq, zeros).
func putPadded(dst []byte, seq uint32) {
	dst[0] = tagPadded
	binary.BigEndian.PutUint32(dst[1:5], seq)
	dst[5], dst[6], dst[7], dst[8], dst[9] = 0, 0, 0, 0, 0
}

// putRepair writes a repair header: tag 0x32 for a group of consecutive
// datagrams (stride 1, exactly version 1), tag 0x34 with the stride in the
// top 3 bits of the index byte for an interleaved group.
func putRepair(dst []byte, first uint32, n, r, idx, stride int) {
	dst[0] = tagRepair
	binary.BigEndian.PutUint32(dst[1:5], first)
	dst[5], dst[6], dst[7] = byte(n), byte(r), byte(idx)
	if stride > 1 {
		dst[0] = tagInterleaved
		dst[7] |= byte(stride-1) << 5
	}
}

// seqLess reports a < b in serial-number arithmetic.
func seqLess(a, b uint32) bool { return int32(a-b) < 0 }

// Stats are a Conn's counters since it was created.
type Stats struct {
	DataSent       uint64 // data datagrams sent
	RepairSent     uint64 // repair datagrams sent
	DataReceived   uint64 // data datagrams received (duplicates excluded)
	RepairReceived uint64 // repair datagrams received
	// Recovered counts datagrams rebuilt from repairs before they were
	// given up: quic-go never saw them lost.
	Recovered uint64
	// Unrecoverable counts datagrams given up: neither received nor
	// rebuilt within the hold (or before leaving the window). quic-go sees
	// each as a loss.
	Unrecoverable uint64
	// Mismatched counts datagrams dropped because they were not framed by
	// this version of the layer (a peer with FEC off, or another version),
	// and loss reports from a peer with transport.fec = "auto" received
	// with "on".
	Mismatched uint64
	// ReportsSent and ReportsReceived count loss reports (adaptive mode).
	ReportsSent     uint64
	ReportsReceived uint64
	// AsksSent counts requests for datagrams the repairs could not
	// rebuild, Resent the datagrams sent again on the peer's requests,
	// Retrieved the datagrams that came again on this end's requests
	// before they were given up (adaptive mode, resend.go).
	AsksSent  uint64
	Resent    uint64
	Retrieved uint64
	// HeldBack counts datagrams above Config.PacketSize not sent because
	// the peer does not read padded data: quic-go's path MTU probes,
	// which it then takes as lost (txPeer.frameData).
	HeldBack uint64
}

// Add adds o's counters to s (the sum over several sockets).
func (s *Stats) Add(o Stats) {
	s.DataSent += o.DataSent
	s.RepairSent += o.RepairSent
	s.DataReceived += o.DataReceived
	s.RepairReceived += o.RepairReceived
	s.Recovered += o.Recovered
	s.Unrecoverable += o.Unrecoverable
	s.Mismatched += o.Mismatched
	s.ReportsSent += o.ReportsSent
	s.ReportsReceived += o.ReportsReceived
	s.AsksSent += o.AsksSent
	s.Resent += o.Resent
	s.Retrieved += o.Retrieved
	s.HeldBack += o.HeldBack
}
