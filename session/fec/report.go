package fec

import (
	"encoding/binary"
	"time"
)

// Loss reports of the adaptive mode (Config.Auto). The receiver of a
// peer's data measures how many of the peer's data datagrams the link lost
// (rebuilt or given up, in seq order) and sends the counts back; the
// peer's sender picks its repairs and interleaving depth from them
// (choose).

const (
	// meterBlock is the number of data datagrams per block of the loss
	// meter; meterBlocks full blocks are kept, so the long window is the
	// last 1024 to 1152 datagrams.
	meterBlock  = 128
	meterBlocks = 8
	// shortMinLost: fewer losses in the short window are noise.
	shortMinLost = 3

	// reportInterval is the least time between two reports to one peer
	// while its data flows; reportIntervalLoss the least when the meter
	// counted a loss since the last report, so that repairs rise within
	// about one round trip of the first losses.
	reportInterval     = 50 * time.Millisecond
	reportIntervalLoss = 10 * time.Millisecond

	// reportLen: tag, report seq u16, datagrams u16, lost u16, runs u16.
	reportLen = 1 + 2 + 2 + 2 + 2

	// reportStale: a report this far behind the last one accepted (in
	// report seq) is taken as the peer's receive state restarted, not as
	// a reordered old report.
	reportStale = 64

	// silentAfter is how many data datagrams an adaptive sender sends
	// without ever getting a report before it warns that the peer does
	// not report (it runs transport.fec = "on", or an older version).
	silentAfter = 4096
)

// meterCounts are the counts of one window of the loss meter.
type meterCounts struct {
	n, lost, runs int // data datagrams, of them lost, separate runs of losses
}

func (m meterCounts) add(o meterCounts) meterCounts {
	return meterCounts{m.n + o.n, m.lost + o.lost, m.runs + o.runs}
}

// lossMeter counts a peer's data datagrams in seq order as received or
// lost over a sliding window of recent datagrams (not of time: a link
// keeps its loss rate while idle). Fixed size.
type lossMeter struct {
	blocks [meterBlocks]meterCounts // full blocks, a ring
	head   int                      // next block to overwrite
	full   int                      // full blocks held
	cur    meterCounts              // block being filled
	inRun  bool                     // the last datagram counted was lost

	// since the last report
	counted, lostSince int
}

func (m *lossMeter) add(lost bool) {
	m.cur.n++
	m.counted++
	if lost {
		m.cur.lost++
		m.lostSince++
		if !m.inRun {
			m.cur.runs++
		}
	}
	m.inRun = lost
	if m.cur.n == meterBlock {
		m.blocks[m.head] = m.cur
		m.head = (m.head + 1) % meterBlocks
		m.full = min(m.full+1, meterBlocks)
		m.cur = meterCounts{}
	}
}

// window returns the counts to report: the long window (all blocks held),
// or the short one (the last full block and the current) when it shows
// loss that began: at least shortMinLost losses and twice the long
// window's rate. Loss that begins thus raises the report at once, loss
// that ends lowers it only over the long window, and at a steady rate the
// report is the long window's (taking the higher of two noisy rates each
// time would over-estimate; measured: a third more repairs at 1%).
func (m *lossMeter) window() meterCounts {
	long := m.cur
	for i := range m.full {
		long = long.add(m.blocks[i])
	}
	if m.full == 0 {
		return long
	}
	short := m.cur.add(m.blocks[(m.head+meterBlocks-1)%meterBlocks])
	if short.lost >= shortMinLost && short.lost*long.n > 2*long.lost*short.n {
		return short
	}
	return long
}

func putReport(dst []byte, rseq uint16, w meterCounts) {
	dst[0] = tagReport
	binary.BigEndian.PutUint16(dst[1:], rseq)
	binary.BigEndian.PutUint16(dst[3:], uint16(min(w.n, 0xFFFF)))
	binary.BigEndian.PutUint16(dst[5:], uint16(min(w.lost, 0xFFFF)))
	binary.BigEndian.PutUint16(dst[7:], uint16(min(w.runs, 0xFFFF)))
}

// maybeReport sends the peer a loss report when its data flowed since the
// last one and the interval has passed. Called on the read goroutine.
func (p *rxPeer) maybeReport(now time.Time) {
	c := p.c
	m := &p.meter
	if !c.cfg.Auto || m.counted == 0 {
		return
	}
	iv := reportInterval
	if m.lostSince > 0 {
		iv = reportIntervalLoss
	}
	if !p.reportAt.IsZero() && now.Sub(p.reportAt) < iv {
		return
	}
	var b [reportLen]byte
	putReport(b[:], p.rseq, m.window())
	if _, err := c.pc.WriteTo(b[:], p.addr); err != nil {
		// Not sent: the next datagram retries; the loss is only that the
		// peer's repairs follow a little later.
		return
	}
	c.st.reportSent.Add(1)
	p.rseq++
	p.reportAt = now
	m.counted, m.lostSince = 0, 0
}

// report applies a peer's loss report to the sender towards it. Reports
// that are older than or equal to the last one accepted (reordered,
// duplicated) are ignored, except far older ones (the peer's receive
// state restarted and numbers its reports anew).
func (p *txPeer) report(rseq uint16, w meterCounts) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reported {
		if d := int16(rseq - p.rseq); d <= 0 && d > -reportStale {
			return
		}
	}
	p.reported, p.rseq = true, rseq
	loss, burst := estimate(w)
	p.repair, p.depth = choose(p.c.cfg.GroupSize, p.c.cfg.Repair, loss, burst)
}
