package fec

import (
	"encoding/binary"
	"net"
	"time"
)

type slotState uint8

const (
	slotEmpty   slotState = iota // no record of this seq
	slotHave                     // datagram present (received or rebuilt)
	slotGivenUp                  // given up on; it may still arrive late
	slotAsked                    // missing and asked for again (resend.go); at is when
)

// slot is the record of one seq in the receive window (index seq%window).
type slot struct {
	seq       uint32
	st        slotState
	delivered bool
	rebuilt   bool      // rebuilt from repairs (the link lost it)
	at        time.Time // when it arrived or was rebuilt
	buf       []byte    // the datagram, kept for recovery of its group
	oob       []byte    // control messages it arrived with (fast path), or those of the datagram that completed its rebuild
	lentGen   uint64    // Conn.readGen when a delivery last lent buf and oob (0: never)
}

// rxGroup is a group of which at least one repair arrived and whose data
// are not all present yet. Its datagrams are first + i*stride, i < n.
type rxGroup struct {
	first   uint32
	n, r    int
	stride  int
	size    int      // shard size
	repairs [][]byte // by repair index; nil when not received
	got     int      // repairs received
}

// rxPeer is the receive state of one peer address. It is owned by the
// goroutine in Conn.ReadFrom.
//
// Invariants: every seq below next has a record (have or given up) unless
// it is from before the first datagram seen; next <= high; high-1 is the
// highest seq known to exist (from a data datagram or a repair's range).
type rxPeer struct {
	c        *Conn
	addr     net.Addr
	lastSeen time.Time

	started   bool
	next      uint32 // next seq to deliver in order
	high      uint32 // one past the highest seq known
	highAt    time.Time
	slots     []slot
	pending   []*rxGroup
	oldRun    int       // consecutive datagrams too old for the window
	holdUntil time.Time // zero: no gap held

	// resends: the peer's reports say it answers requests (resend.go);
	// askRTT and askVar the measured time from a request to the datagram
	// it brought.
	resends        bool
	askRTT, askVar time.Duration
	askedAt        time.Time // the last request

	enc     codecs
	shards  [][]byte
	padded  [][]byte
	missing []int

	// Adaptive mode: the loss measured on this peer's data, and the
	// numbering and time of the reports sent back (report.go).
	meter    lossMeter
	rseq     uint16
	reportAt time.Time
}

// seqOf is the seq of g's i-th datagram.
func (g *rxGroup) seqOf(i int) uint32 { return g.first + uint32(i*g.stride) }

// holds reports whether seq is one of g's datagrams.
func (g *rxGroup) holds(seq uint32) bool {
	d := seq - g.first
	return !seqLess(seq, g.first) && d%uint32(g.stride) == 0 && d/uint32(g.stride) < uint32(g.n)
}

func newRxPeer(c *Conn, addr net.Addr) *rxPeer {
	return &rxPeer{c: c, addr: addr, slots: make([]slot, window), enc: codecs{}}
}

// reset restarts the state at seq (first datagram, or the peer restarted).
func (p *rxPeer) reset(seq uint32, now time.Time) {
	p.started = true
	p.next, p.high, p.highAt = seq, seq, now
	for i := range p.slots {
		p.slots[i].st = slotEmpty
	}
	p.pending = p.pending[:0]
	p.oldRun = 0
	p.holdUntil = time.Time{}
}

// record returns the record of seq, nil when there is none.
func (p *rxPeer) record(seq uint32) *slot {
	s := &p.slots[seq%window]
	if s.seq != seq || s.st == slotEmpty {
		return nil
	}
	return s
}

// admit places seq (the highest of a datagram's range) in the window: it
// slides the window up, restarts on a far jump, and reports false for a
// datagram too old to keep.
func (p *rxPeer) admit(lo, hi uint32, now time.Time) bool {
	if !p.started {
		p.reset(lo, now)
	}
	switch {
	case !seqLess(hi, p.high):
		if hi-p.high >= resyncDistance {
			p.reset(lo, now)
		}
		p.advance(hi+1, now)
	case seqLess(lo, p.high-window):
		p.oldRun++
		if p.oldRun < resyncAfterOld && p.high-lo < resyncDistance {
			return false
		}
		p.reset(lo, now)
		p.advance(hi+1, now)
	}
	p.oldRun = 0
	return true
}

// advance raises high to newHigh, delivering or giving up what leaves the
// window.
func (p *rxPeer) advance(newHigh uint32, now time.Time) {
	lo := newHigh - window
	if seqLess(p.next, lo) {
		end := lo
		if seqLess(p.high, lo) {
			end = p.high
		}
		for seqLess(p.next, end) {
			p.pass(now)
		}
		if seqLess(p.next, lo) {
			// A loss longer than the window: nothing of it is kept.
			p.c.st.unrecoverable.Add(uint64(lo - p.next))
			for range min(lo-p.next, meterBlock*(meterBlocks+1)) {
				p.meter.add(true)
			}
			p.next = lo
		}
	}
	p.high, p.highAt = newHigh, now
	kept := p.pending[:0]
	for _, g := range p.pending {
		if !seqLess(g.first, lo) {
			kept = append(kept, g)
		}
	}
	clear(p.pending[len(kept):])
	p.pending = kept
}

// pass moves next past one seq: delivers it if present, gives it up if not.
func (p *rxPeer) pass(now time.Time) {
	if s := p.record(p.next); s != nil && s.st == slotHave {
		if !s.delivered {
			s.delivered = true
			p.c.deliver(s, p.addr)
		}
		p.meter.add(s.rebuilt)
	} else if s == nil || s.st == slotAsked {
		s = &p.slots[p.next%window]
		s.seq, s.st, s.delivered, s.at = p.next, slotGivenUp, false, now
		p.c.st.unrecoverable.Add(1)
		p.meter.add(true)
	}
	p.next++
}

// data handles a data datagram.
func (p *rxPeer) data(seq uint32, payload []byte, now time.Time) {
	if !p.admit(seq, seq, now) {
		return
	}
	if s := p.record(seq); s != nil && s.st == slotHave {
		return // duplicate
	}
	p.c.st.dataRecv.Add(1)
	if s := p.record(seq); s != nil && s.st == slotAsked {
		// Sent again on request: the link lost it (the meter counts it
		// so), and its round trip times the next requests.
		p.c.st.retrieved.Add(1)
		p.sampleAsk(now.Sub(s.at))
		p.store(seq, payload, now, true)
	} else {
		p.store(seq, payload, now, false)
	}
	for _, g := range p.pending {
		if g.holds(seq) {
			p.tryRecover(g, now)
			break
		}
	}
	p.flush(now)
}

// store records a datagram that arrived or was rebuilt; one behind next
// (its gap was given up, or it precedes the first datagram heard) is
// delivered at once. It reports whether seq had been given up.
func (p *rxPeer) store(seq uint32, payload []byte, now time.Time, rebuilt bool) (givenUp bool) {
	s := &p.slots[seq%window]
	givenUp = s.seq == seq && s.st == slotGivenUp
	late := givenUp || seqLess(seq, p.next)
	s.seq, s.st, s.at, s.rebuilt = seq, slotHave, now, rebuilt
	if s.lentGen == p.c.readGen {
		// A delivery of this read may still hold the buffers: fill new
		// ones (only when the window wrapped within one read).
		s.buf, s.oob = nil, nil
	}
	s.lentGen = 0
	s.buf = append(s.buf[:0], payload...)
	s.oob = append(s.oob[:0], p.c.curOOB...)
	s.delivered = late
	if late {
		p.c.deliver(s, p.addr)
	}
	return givenUp
}

// flush delivers the datagrams that are next in order and sets the hold of
// a gap at next: until Hold after the first datagram behind it arrived.
func (p *rxPeer) flush(now time.Time) {
	for p.next != p.high {
		s := p.record(p.next)
		if s == nil || s.st != slotHave {
			break
		}
		if !s.delivered {
			s.delivered = true
			p.c.deliver(s, p.addr)
		}
		p.meter.add(s.rebuilt)
		p.next++
	}
	p.holdUntil = time.Time{}
	if p.next == p.high {
		return
	}
	since := p.highAt
	for q := p.next + 1; q != p.high; q++ {
		if s := p.record(q); s != nil && s.st == slotHave {
			since = s.at
			break
		}
	}
	p.holdUntil = since.Add(p.c.cfg.Hold)
	if s := p.record(p.next); s != nil && s.st == slotAsked {
		p.holdUntil = s.at.Add(p.askWait())
	}
}

// skipGap gives up the gap at next (its hold ended) and delivers what
// waited behind it. When the gap was asked for, a missing datagram behind
// it that was not (it went missing later) stops it: it gets its own hold
// and maybe a request.
func (p *rxPeer) skipGap(now time.Time) {
	for asked := false; p.next != p.high; {
		s := p.record(p.next)
		if s != nil && s.st == slotHave || asked && s == nil {
			break
		}
		asked = asked || s != nil && s.st == slotAsked
		p.pass(now)
	}
	p.flush(now)
}

// repair handles a repair datagram of the group first + i*stride, i < n.
func (p *rxPeer) repair(first uint32, n, r, idx, stride int, shard []byte, now time.Time) {
	if n < 1 || n > MaxGroupSize || r < 1 || r > MaxRepair || idx >= r || len(shard) < lenPrefix ||
		stride < 1 || stride > MaxDepth {
		return
	}
	if !p.started {
		// No data datagram of this peer's heard yet: its group went out
		// before this end could hear it (the peer's first packets reach
		// a port not yet bound, and only the repair after them arrives).
		// Its datagrams are not the link's losses; counting them would
		// start the loss measure, and the peer's repairs, high. The
		// window starts at the first data datagram.
		return
	}
	last := first + uint32((n-1)*stride)
	if !p.admit(first, last, now) || seqLess(first, p.high-window) {
		return
	}
	var g *rxGroup
	for _, q := range p.pending {
		if q.first == first {
			g = q
			break
		}
	}
	if g == nil {
		if len(p.pending) >= maxPending {
			p.pending[0] = nil
			p.pending = p.pending[1:]
		}
		g = &rxGroup{first: first, n: n, r: r, stride: stride, size: len(shard), repairs: make([][]byte, r)}
		p.pending = append(p.pending, g)
	} else if g.n != n || g.r != r || g.stride != stride || g.size != len(shard) {
		return
	}
	if g.repairs[idx] == nil {
		g.repairs[idx] = append([]byte(nil), shard...)
		g.got++
		p.tryRecover(g, now)
	}
	p.flush(now)
}

func (p *rxPeer) dropGroup(g *rxGroup) {
	for i, q := range p.pending {
		if q == g {
			p.pending = append(p.pending[:i], p.pending[i+1:]...)
			p.pending = p.pending[:len(p.pending):len(p.pending)]
			return
		}
	}
}

// tryRecover rebuilds g's missing datagrams once enough shards are present,
// and forgets g when nothing is missing any more.
func (p *rxPeer) tryRecover(g *rxGroup, now time.Time) {
	p.missing = p.missing[:0]
	for i := range g.n {
		if s := p.record(g.seqOf(i)); s == nil || s.st != slotHave {
			p.missing = append(p.missing, i)
		}
	}
	if len(p.missing) == 0 {
		p.dropGroup(g)
		return
	}
	if g.got < len(p.missing) {
		return
	}
	total := g.n + g.r
	for len(p.shards) < total {
		p.shards = append(p.shards, nil)
		p.padded = append(p.padded, nil)
	}
	shards := p.shards[:total]
	for i := range g.n {
		buf := p.padded[i]
		if cap(buf) < g.size {
			buf = make([]byte, 0, g.size)
			p.padded[i] = buf
		}
		s := p.record(g.seqOf(i))
		if s == nil || s.st != slotHave {
			shards[i] = buf[:0]
			continue
		}
		if len(s.buf)+lenPrefix > g.size {
			p.dropGroup(g) // inconsistent with its repairs
			return
		}
		buf = binary.BigEndian.AppendUint16(buf[:0], uint16(len(s.buf)))
		buf = append(buf, s.buf...)
		buf = buf[:g.size]
		clear(buf[lenPrefix+len(s.buf):])
		shards[i] = buf
	}
	copy(shards[g.n:], g.repairs)
	p.dropGroup(g)
	enc, err := p.enc.get(g.n, g.r)
	if err == nil {
		err = enc.ReconstructData(shards)
	}
	if err != nil {
		return
	}
	for _, i := range p.missing {
		sh := shards[i]
		if len(sh) < lenPrefix {
			continue
		}
		l := int(binary.BigEndian.Uint16(sh))
		if lenPrefix+l > len(sh) {
			continue
		}
		if !p.store(g.seqOf(i), sh[lenPrefix:lenPrefix+l], now, true) {
			p.c.st.recovered.Add(1)
		}
	}
	clear(shards)
}
