package fec

import (
	"encoding/binary"
	"time"
)

// Resending on request (adaptive mode). A loss the repairs of its group
// cannot rebuild reaches quic-go as a loss, and quic-go cuts its window
// for it; one such loss early in a session (a small window, short groups)
// sets its slow-start threshold for good. So when the hold of a gap ends,
// a receiver whose peer keeps what it sent asks for the missing datagrams
// (tag 0x35) and holds the gap about one more round trip; the sender
// sends them again from its history of the last window of data
// datagrams. quic-go sees a late packet, not a lost one.

const (
	// tagAsk: the receiver of data asks its sender for datagrams it
	// still misses. 0x35 | count u8 | seq u32 × count.
	tagAsk = 0x35
	// maxAsk bounds the seqs of one request.
	maxAsk = 64
	// askMaxSpan and askMaxMissing: a receiver asks only when at most
	// askMaxSpan datagrams arrived behind the gap during its hold and at
	// most askMaxMissing of them are missing: random loss the repairs
	// could not rebuild while quic-go's window is small, where one loss
	// sets its slow-start threshold for the session. Measured at 3% on
	// the benchmark WAN (50 ms, 100 Mbit/s; docs/benchmarks/fec.md): the
	// losses given up in a new session's first GET that made it slow had
	// 29 and 64 datagrams behind them and 1–2 missing; those of a queue
	// overflowing at the slow-start overshoot 96–160 behind and 8–50
	// missing (down to 1–2 at a burst's tail, still 100 or more behind).
	// quic-go must see the overflow to back off, and with a large window
	// a loss costs it less than a held round trip.
	askMaxSpan    = 80
	askMaxMissing = 2
	// reportFlagsLen: a report of this version carries one more byte
	// after reportLen, the flags below. A version-2 receiver reads the
	// first reportLen bytes and ignores the rest.
	reportFlagsLen = reportLen + 1
	// flagResends: the report's sender keeps its history and answers
	// requests.
	flagResends = 0x01
	// flagPadded (version 4): the report's sender reads padded data
	// (tag 0x36).
	flagPadded = 0x02
	// maxResend is how often one datagram is sent again at most: requests
	// repeated (or spoofed) cost the link at most this many more copies.
	maxResend = 2

	// askWaitFirst is how long a gap is held after a request before the
	// round trip of requests is measured; askWaitMax bounds the wait
	// after. A wait too long costs only when the resent datagram is lost
	// too (a few per cent of requests): the session stalls for it.
	askWaitFirst = 250 * time.Millisecond
	askWaitMax   = time.Second
)

// histEntry is one data datagram in the sender's history.
type histEntry struct {
	seq   uint32
	sent  uint8 // times sent again
	ok    bool
	shard []byte // the datagram's data shard: its length, then the datagram
}

// histCap is the capacity of a history buffer: the shard of the largest
// datagram quic-go sends (1452 bytes) and so the largest shard of a
// group, which pad then extends in place.
const histCap = 1452 + lenPrefix

// remember keeps b, the data datagram seq, for requests and returns its
// data shard, which the open block uses as its own (adaptive mode; the
// caller holds p.mu). A block holds at most a quarter of the window, so
// the history never reuses a buffer the open block still holds.
func (p *txPeer) remember(seq uint32, b []byte) []byte {
	if p.hist == nil {
		p.hist = make([]histEntry, window)
	}
	e := &p.hist[seq%window]
	e.seq, e.sent, e.ok = seq, 0, true
	if cap(e.shard) < len(b)+lenPrefix {
		e.shard = make([]byte, 0, max(histCap, len(b)+lenPrefix))
	}
	e.shard = appendShard(e.shard[:0], b)
	return e.shard
}

// resend sends again the datagrams of a request that the history still
// holds, each at most maxResend times.
func (p *txPeer) resend(seqs []uint32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped || p.hist == nil {
		return
	}
	for _, seq := range seqs {
		e := &p.hist[seq%window]
		if !e.ok || e.seq != seq || e.sent >= maxResend {
			continue
		}
		e.sent++
		p.queueData(e.shard[lenPrefix:], seq, frameResent)
	}
	if err := p.sendOut(); err != nil {
		p.c.log.Debug("fec: resending datagrams failed", "error", err.Error())
	}
}

// parseAsk reads the seqs of a request into dst; nil when malformed.
func parseAsk(b []byte, dst []uint32) []uint32 {
	if len(b) < 2 {
		return nil
	}
	n := int(b[1])
	if n == 0 || n > maxAsk || len(b) < 2+4*n {
		return nil
	}
	for i := range n {
		dst = append(dst, be32(b[2+4*i:]))
	}
	return dst
}

// ask requests the datagrams missing at and behind next and marks them
// asked, at most one request per askWait and only for a sparse flow with
// few missing (askMaxSpan, askMaxMissing). It reports whether a request
// went out; the gap is then held for askWait.
func (p *rxPeer) ask(now time.Time) bool {
	if !p.askedAt.IsZero() && now.Sub(p.askedAt) < p.askWait() || p.high-p.next > askMaxSpan {
		return false
	}
	var missing [askMaxMissing]uint32
	n := 0
	for q := p.next; q != p.high; q++ {
		if p.record(q) != nil {
			continue
		}
		if n == askMaxMissing {
			return false
		}
		missing[n] = q
		n++
	}
	if n == 0 {
		return false
	}
	var b [2 + 4*askMaxMissing]byte
	b[0], b[1] = tagAsk, byte(n)
	for i, q := range missing[:n] {
		binary.BigEndian.PutUint32(b[2+4*i:], q)
	}
	if _, err := p.c.pc.WriteTo(b[:2+4*n], p.addr); err != nil {
		return false
	}
	p.c.st.askSent.Add(1)
	p.askedAt = now
	for _, q := range missing[:n] {
		s := &p.slots[q%window]
		s.seq, s.st, s.at, s.delivered = q, slotAsked, now, false
	}
	return true
}

// askWait is how long a gap is held after its request: the measured round
// trip of requests plus four deviations (at least Hold), askWaitFirst
// before any was measured.
func (p *rxPeer) askWait() time.Duration {
	if p.askRTT == 0 {
		return askWaitFirst
	}
	return min(p.askRTT+max(4*p.askVar, p.c.cfg.Hold), askWaitMax)
}

// sampleAsk takes the time from a request to the datagram it brought
// (RFC 6298's smoothing).
func (p *rxPeer) sampleAsk(d time.Duration) {
	if p.askRTT == 0 {
		p.askRTT, p.askVar = d, d/2
		return
	}
	p.askVar += (max(p.askRTT-d, d-p.askRTT) - p.askVar) / 4
	p.askRTT += (d - p.askRTT) / 8
}

// expire ends the hold of the gap at next: with a peer that resends, it
// asks for the gap once and holds it for askWait; otherwise, or when the
// request was made, it gives the gap up.
func (p *rxPeer) expire(now time.Time) {
	if p.resends {
		if s := p.record(p.next); s == nil && p.ask(now) {
			p.flush(now)
			return
		}
	}
	p.skipGap(now)
}
