package fec

import (
	"cmp"
	"crypto/rand"
	"encoding/binary"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// txPeer is the send state towards one address: the open group and its
// timer. mu serialises the writes to that address and the timer's flush.
type txPeer struct {
	c       *Conn
	addr    net.Addr
	lastUse atomic.Int64 // unix nanos of the last write (eviction)

	mu      sync.Mutex // guards everything below
	stopped bool
	seq     uint32   // seq of the next data datagram
	first   uint32   // seq of the open block's first datagram
	shards  [][]byte // open block: shard i = length prefix + datagram (+ padding at flush)
	n       int      // datagrams in the open block
	firstAt time.Time
	lastAt  time.Time
	timer   *time.Timer // flushes the open block (idle or FlushMax)
	armed   bool
	out     []byte     // frames waiting for sendOut, back to back
	outF    []outFrame // their sizes and kinds
	oob     []byte     // control messages of the last write
	cmsg    []byte     // scratch: oob plus the GSO segment size
	enc     codecs
	work    [][]byte  // one group's shards at flush
	rep     [][]byte  // repair shard buffers of the block's groups
	groups  []txGroup // the block's groups at flush

	// The open block holds blockDepth groups' worth of datagrams
	// (blockSpan each, span), interleaved at flush (flushLocked).
	blockDepth, blockSpan int

	// Adaptive mode (Config.Auto): repairs of a full group and
	// interleaving depth, from the last report accepted (rseq).
	repair, depth     int
	repairAt, depthAt time.Time // when a report last called for at least repair, depth
	reported          bool
	rseq              uint16
	// padded: the peer's last report says it reads padded data (tag
	// 0x36, queueData).
	padded     bool
	unreported int // data datagrams sent before any report, up to silentAfter

	// loss is the rate the sender follows (raised at once, lowered after
	// lowerAfter, like repair); short[n] the repairs of a plain group cut
	// short at n datagrams for it (setShort; nil until a report).
	loss   float64
	lossAt time.Time
	// cleanSince: since when loss has been 0 (zero: it is not, or no
	// report came yet); see span.
	cleanSince time.Time
	short      []uint8

	// hist: the last window of data datagrams, for the peer's requests
	// (adaptive mode, resend.go).
	hist []histEntry

	// The budget of repairs short groups get beyond the proportional
	// count (spendExtra).
	extra    float64
	extraAt  time.Time
	extraSeq uint32
}

// span is how many data datagrams a full group holds: GroupSize, or twice
// that (at most MaxGroupSize) in the adaptive mode once the loss the
// sender follows has been zero for lowerAfter. At no loss the single
// repair per group is insurance for the first loss, before a report can
// call for more; a group twice as large halves what the insurance costs
// (6% more datagrams at 16, 3% at 32: on loopback the CPU per MiB follows
// the datagrams sent) and still rebuilds one loss per group. Waiting
// lowerAfter keeps the larger groups off a link that lost datagrams a
// moment ago, and off a session's first second.
func (p *txPeer) span(now time.Time) int {
	g := p.c.cfg.GroupSize
	if p.c.cfg.Auto && !p.cleanSince.IsZero() && now.Sub(p.cleanSince) >= lowerAfter &&
		p.depth == 1 && p.repair <= floorRepair {
		return min(MaxGroupSize, 2*g)
	}
	return g
}

// spendExtra takes up to want repairs from the budget of short groups'
// extra repairs and returns how many it took. The budget grows by the
// full groups' repair ratio (Config.Repair/GroupSize) per data datagram
// sent and by one every extraEvery, up to extraBurst: the extra repairs
// are load quic-go's congestion control does not see, so under paced
// sending (a transfer's first round trips, where most groups are short)
// they add at most what full groups would, while an idle session's small
// requests get them all.
func (p *txPeer) spendExtra(want int, now time.Time) int {
	ratio := float64(p.c.cfg.Repair) / float64(p.c.cfg.GroupSize)
	p.extra += float64(p.seq-p.extraSeq)*ratio + float64(now.Sub(p.extraAt))/float64(extraEvery)
	p.extraSeq, p.extraAt = p.seq, now
	p.extra = min(p.extra, extraBurst)
	k := min(want, int(p.extra))
	p.extra -= float64(k)
	return k
}

func newTxPeer(c *Conn, addr net.Addr) *txPeer {
	var b [4]byte
	_, _ = rand.Read(b[:])
	p := &txPeer{
		c:      c,
		addr:   addr,
		seq:    binary.BigEndian.Uint32(b[:]),
		out:    make([]byte, 0, 1600),
		enc:    codecs{},
		repair: c.cfg.Repair,
		depth:  1,
	}
	if c.cfg.Auto {
		// Before the first report: the floor, which still rebuilds a
		// loss per group; the first report with loss raises it.
		p.repair = floorRepair
	} else {
		p.setShort(impliedLoss(c.cfg.GroupSize, c.cfg.Repair))
	}
	p.timer = time.AfterFunc(time.Hour, p.onTimer)
	p.timer.Stop()
	return p
}

// stop disables the timer for good; a flush already running finds stopped
// set and sends nothing.
func (p *txPeer) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopped = true
	p.timer.Stop()
}

// write sends the datagrams of b, framed: one datagram, or with seg > 0
// (a GSO write from quic-go) consecutive datagrams of seg bytes, the last
// possibly shorter. oob and more are the control messages to send them
// with (ECN marking, source address; none on the plain path), in two
// pieces so the caller can leave one out without a copy; the timer's
// repairs go out with the last write's.
func (p *txPeer) write(b []byte, seg int, oob, more []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return 0, net.ErrClosed
	}
	p.oob = append(append(p.oob[:0], oob...), more...)
	// One clock reading for the whole write: its datagrams go out
	// together, and a reading per datagram cost 2% of the CPU of a bulk
	// transfer (a vDSO call each).
	now := time.Now()
	if seg <= 0 || seg >= len(b) {
		p.frameData(b, now)
	} else {
		for off := 0; off < len(b); off += seg {
			p.frameData(b[off:min(off+seg, len(b))], now)
		}
	}
	if err := p.sendOut(); err != nil {
		return 0, err
	}
	return len(b), nil
}

// frameData queues b as the next data datagram and adds it to the open
// block, closing the block (its repairs queued behind) when full. A
// datagram the socket then refuses keeps its seq: the receiver counts it
// lost, and its group's repairs may still rebuild it.
//
// A datagram larger than Config.PacketSize while the peer does not read
// padded data is not sent at all: only a path MTU probe of quic-go's is
// that large, and sent unpadded it could find a size the repairs (5 bytes
// longer) do not fit. quic-go takes the probe as lost and keeps its size.
func (p *txPeer) frameData(b []byte, now time.Time) {
	c := p.c
	if !p.padded && c.cfg.PacketSize > 0 && len(b) > c.cfg.PacketSize {
		c.st.heldBack.Add(1)
		return
	}
	seq := p.seq
	p.seq++
	p.queueData(b, seq, frameData)
	if c.cfg.Auto && !p.reported && p.unreported < silentAfter {
		if p.unreported++; p.unreported == silentAfter {
			c.log.Warn(`no FEC loss reports from the peer: transport.fec is "auto" here but the peer does not report (it has transport.fec = "on", or runs an older version), so repairs stay at their floor; set both ends to the same transport.fec`,
				"remote_addr", p.addr.String(), "data_datagrams_sent", silentAfter)
		}
	}

	if p.n > 0 && now.Sub(p.lastAt) >= p.flushIdle() {
		// The sender went idle and the timer has not closed the group
		// yet (see onTimer): close it now, its repairs going out with
		// this datagram, so no wake-up is spent on it.
		p.flushLocked()
	}
	if p.n == 0 {
		p.first = seq
		p.firstAt = now
		// A block never spans more than a quarter of the receiver's
		// window, so all its groups stay within it.
		p.blockDepth = max(1, min(p.depth, window/4/c.cfg.GroupSize))
		p.blockSpan = p.span(now)
	}
	if p.n == len(p.shards) {
		p.shards = append(p.shards, nil)
	}
	if c.cfg.Auto {
		// The history's copy is the shard: one copy less per datagram.
		p.shards[p.n] = p.remember(seq, b)
	} else {
		p.shards[p.n] = appendShard(p.shards[p.n][:0], b)
	}
	p.n++
	p.lastAt = now
	if p.n == p.blockSpan*p.blockDepth {
		p.flushLocked()
	} else if !p.armed {
		p.armed = true
		p.timer.Reset(p.flushIdle())
	}
	// A timer still armed for an earlier group stays armed: onTimer
	// takes the group open when it fires. Stopping and arming it for
	// every group cost a thread wake-up each on a quiet host.
}

// queue appends a frame of hdr header bytes (filled in whole by the
// caller) and body to the frames waiting for sendOut.
func (p *txPeer) queue(body []byte, hdr int, kind frameKind) {
	// Not zeroed: putData, putPadded and putRepair write every byte.
	n := len(p.out)
	p.out = slices.Grow(p.out, hdr+len(body))[:n+hdr]
	p.out = append(p.out, body...)
	p.outF = append(p.outF, outFrame{n: hdr + len(body), kind: kind})
}

// queueData queues b as data datagram seq: padded (tag 0x36) when the
// peer reads that, so that it is exactly as long as a repair of a full
// group of datagrams its size. Data and repairs of a bulk transfer then go
// out in one GSO run instead of three system calls per repair, and a path
// MTU probe of quic-go's carries a repair's size, so a size the probe
// finds also fits the repairs (transport.md "Cost"). A datagram sent again
// keeps the framing of the time it goes out, as its size must fit alike.
func (p *txPeer) queueData(b []byte, seq uint32, kind frameKind) {
	if p.padded {
		p.queue(b, paddedHeaderLen, kind)
		putPadded(p.out[len(p.out)-paddedHeaderLen-len(b):], seq)
		return
	}
	p.queue(b, dataHeaderLen, kind)
	putData(p.out[len(p.out)-dataHeaderLen-len(b):], seq)
}

// outFrame is one frame in txPeer.out.
type outFrame struct {
	n    int
	kind frameKind
}

// frameKind is what a queued frame is, for the counters.
type frameKind uint8

const (
	frameData frameKind = iota
	frameRepair
	frameResent // a data datagram sent again on request
)

// sendOut sends the queued frames in order and empties the queue. With
// GSO, each run of equal-size frames (and a shorter one ending it) goes
// out in one system call, as quic-go's own batches do without FEC. It
// returns the first error; frames after a failed run are still tried.
func (p *txPeer) sendOut() error {
	c := p.c
	var first error
	off := 0
	for i := 0; i < len(p.outF); {
		size, total, j := p.outF[i].n, p.outF[i].n, i+1
		if c.gso.Load() {
			for j < len(p.outF) && j-i < maxGSOSegments && p.outF[j].n <= size && total+p.outF[j].n <= maxGSOBytes {
				total += p.outF[j].n
				j++
				if p.outF[j-1].n < size {
					break
				}
			}
		}
		seg := 0
		if j-i > 1 {
			seg = size
		}
		if err := c.send(p.out[off:off+total], seg, p.oob, &p.cmsg, p.addr); err != nil {
			first = cmp.Or(first, err)
		} else {
			for _, f := range p.outF[i:j] {
				switch f.kind {
				case frameRepair:
					c.st.repairSent.Add(1)
				case frameResent:
					c.st.resent.Add(1)
				default:
					c.st.dataSent.Add(1)
				}
			}
		}
		off += total
		i = j
	}
	p.out, p.outF = p.out[:0], p.outF[:0]
	return first
}

// flushIdle is how long the open block waits for a next datagram. A block
// meant to interleave (bursty loss) waits up to FlushMax instead of
// FlushIdle: traffic that is not dense (a window still growing, requests)
// would otherwise form blocks of one or two datagrams, each followed at
// once by its repair, and a run of losses takes both. Only the repairs
// wait; the data go out at once, and FlushMax is within the receiver's
// hold.
func (p *txPeer) flushIdle() time.Duration {
	if p.blockDepth > 1 {
		return p.c.cfg.FlushMax
	}
	return p.c.cfg.FlushIdle
}

// onTimer closes the open group when the sender is idle or the group is
// FlushMax old, and otherwise re-arms for the group's FlushMax.
//
// The timer is armed FlushIdle after a group opens while it is not armed
// already, so a lone burst (a small request) is closed about FlushIdle
// after it: it counts as idle when nothing was sent for half of
// FlushIdle. While datagrams keep coming the timer fires about once per
// FlushMax, not once per group: groups fill and close on their own, and
// one that goes quiet is closed by the next datagram (frameData) or by
// the timer within FlushMax.
func (p *txPeer) onTimer() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.armed = false
	if p.stopped || p.n == 0 {
		return
	}
	now := time.Now()
	idle := p.blockDepth == 1 && now.Sub(p.lastAt) >= p.c.cfg.FlushIdle/2
	if due := p.firstAt.Add(p.c.cfg.FlushMax).Sub(now); !idle && due > 0 {
		p.armed = true
		p.timer.Reset(due)
		return
	}
	p.flushLocked()
	if err := p.sendOut(); err != nil {
		p.c.log.Debug("fec: sending repairs failed", "error", err.Error())
	}
}

// flushLocked queues the open block's repairs (for sendOut) and starts a
// new block.
//
// A block of n datagrams is laid out in d groups: group j holds the
// datagrams j, j+d, j+2d, ... of the block, so a burst of up to d
// consecutive losses costs each group at most one. d is the depth the
// block started with, lowered so that every group gets at least
// minPerGroup datagrams (a sparse block is one plain group) but never
// below what keeps each group within GroupSize. With d = 1 the groups are
// exactly those of version 1 (tag 0x32).
//
// A plain group cut short gets repairs in proportion to its size, and up
// to as many as keep its own chance of losing data at the target
// (chooseShort: one loss event per short group matters to quic-go as much
// as one per full group) as far as the budget of such extra repairs
// allows (spendExtra); an interleaved group gets the full count
// whatever its size, as a burst of length L costs every group about L/d
// however few datagrams it holds. The repairs go out round-robin over the
// groups (the first of each, then the second of each, ...), so a burst
// among the repairs costs each group at most about one too.
func (p *txPeer) flushLocked() {
	n := p.n
	p.n = 0
	if n == 0 || p.stopped {
		return
	}
	g := p.blockSpan
	d := max(1, (n+g-1)/g, min(p.blockDepth, n/minPerGroup))
	p.groups = p.groups[:0]
	nrep, maxR := 0, 0
	for j := range d {
		cnt := (n - j + d - 1) / d
		r := repairCount(cnt, g, p.repair)
		switch {
		case d > 1:
			r = p.repair
		case cnt < len(p.short):
			if want := int(p.short[cnt]); want > r {
				r += p.spendExtra(want-r, time.Now())
			}
		}
		if p.encodeGroup(j, d, cnt, r, nrep) {
			p.groups = append(p.groups, txGroup{j: j, cnt: cnt, r: r, rep: nrep})
		}
		nrep += r
		maxR = max(maxR, r)
	}
	for i := range maxR {
		for _, gr := range p.groups {
			if i >= gr.r {
				continue
			}
			body := p.rep[gr.rep+i]
			p.queue(body, repairHeaderLen, frameRepair)
			putRepair(p.out[len(p.out)-repairHeaderLen-len(body):], p.first+uint32(gr.j), gr.cnt, gr.r, i, d)
		}
	}
}

// txGroup is one group of a block being flushed: block index j of its
// first datagram, cnt datagrams, r repairs in p.rep[rep:rep+r].
type txGroup struct{ j, cnt, r, rep int }

// encodeGroup computes the r repairs of the group of cnt datagrams that
// starts at block index j with the given stride into p.rep[at:at+r]. It
// reports false when encoding failed (the group then gets no repairs).
func (p *txPeer) encodeGroup(j, stride, cnt, r, at int) bool {
	size := 0
	for i := range cnt {
		size = max(size, len(p.shards[j+i*stride]))
	}
	for len(p.rep) < at+r {
		p.rep = append(p.rep, nil)
	}
	work := p.work[:0]
	for i := range cnt {
		k := j + i*stride
		p.shards[k] = pad(p.shards[k], size, len(p.shards[k]))
		work = append(work, p.shards[k])
	}
	for i := range r {
		// Encode writes the whole of every repair shard: no clearing.
		p.rep[at+i] = pad(p.rep[at+i], size, size)
		work = append(work, p.rep[at+i])
	}
	p.work = work[:0]
	enc, err := p.enc.get(cnt, r)
	if err == nil {
		err = enc.Encode(work)
	}
	clear(work)
	if err != nil {
		p.c.log.Debug("fec: encoding a group failed", "error", err.Error())
		return false
	}
	return true
}

// appendShard appends the data shard of datagram b (its length, then b)
// to s.
func appendShard(s, b []byte) []byte {
	s = binary.BigEndian.AppendUint16(s, uint16(len(b)))
	return append(s, b...)
}

// pad returns s resized to size, the bytes from keep on zeroed (its
// buffer reused when large enough).
func pad(s []byte, size, keep int) []byte {
	if cap(s) < size {
		s = append(s[:cap(s)], make([]byte, size-cap(s))...)
	}
	s = s[:size]
	if keep < size {
		clear(s[keep:])
	}
	return s
}
