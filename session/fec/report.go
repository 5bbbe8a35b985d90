package fec

import (
	"encoding/binary"
	"slices"
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
	// shortMinLost: fewer runs of losses in the short window are noise.
	shortMinLost = 3

	// reportInterval is the least time between two reports to one peer
	// while its data flows; reportIntervalLoss the least when the meter
	// counted a loss since the last report, so that repairs rise within
	// about one round trip of the first losses.
	reportInterval     = 50 * time.Millisecond
	reportIntervalLoss = 10 * time.Millisecond

	// reportLen: tag, report seq u16, datagrams u16, lost u16, burst u16.
	reportLen = 1 + 2 + 2 + 2 + 2

	// reportStale: a report this far behind the last one accepted (in
	// report seq) is taken as the peer's receive state restarted, not as
	// a reordered old report.
	reportStale = 64

	// lowerAfter is how long reports must call for fewer repairs or a
	// lower depth before the sender lowers them. Losses that come in
	// bursts a few hundred datagrams apart leave windows without any loss
	// between them; dropping to the floor there would lose the next burst
	// whole.
	lowerAfter = time.Second

	// silentAfter is how many data datagrams an adaptive sender sends
	// without ever getting a report before it warns that the peer does
	// not report (it runs transport.fec = "on", or an older version).
	silentAfter = 4096
)

// lossReport is what a report says: of the last n data datagrams the
// link lost lost; burst is the mean length of the recent runs of
// consecutive losses (0: not known yet).
type lossReport struct {
	n, lost int
	burst   float64
}

// The mean run length is over the last burstRuns runs (a window of
// datagrams at ~1% loss holds too few), each counted as at most
// burstRunCap long: one outage of 20 datagrams must not read as bursty
// loss, and runs longer than the cap are beyond any repair count anyway.
const (
	burstRuns   = 16
	burstRunCap = 8
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

	// Lengths of the last runs of losses, over runs rather than over the
	// window, so that it holds across windows with one or two runs.
	run     int              // length of the current run
	runs    [burstRuns]uint8 // the last runs' lengths (capped), a ring
	runHead int              // next entry of runs to overwrite
	nRuns   int              // entries of runs filled

	// since the last report
	counted, lostSince int
}

func (m *lossMeter) add(lost bool) {
	m.cur.n++
	m.counted++
	if lost {
		m.run++
		if m.run <= burstRunCap {
			// A longer run (a queue overflowing, an outage) is beyond
			// any repair count; counted whole it would raise the
			// repairs of every group for what they cannot rebuild.
			m.cur.lost++
			m.lostSince++
		}
		if !m.inRun {
			m.cur.runs++
		}
	} else if m.run > 0 {
		m.runs[m.runHead] = uint8(min(m.run, burstRunCap))
		m.runHead = (m.runHead + 1) % burstRuns
		m.nRuns = min(m.nRuns+1, burstRuns)
		m.run = 0
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
// loss that began: at least shortMinLost separate runs of losses (one
// run is one event, however long) and twice the long window's rate. Loss that begins thus raises the report at once, loss
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
	if short.runs >= shortMinLost && short.lost*long.n > 2*long.lost*short.n {
		return short
	}
	return long
}

// report returns what to report: the window's counts and, once minRuns
// runs ended, the mean run length; 1 when the median run is a single
// loss: random loss with a few long runs among it (a queue overflowing
// now and then) is not what interleaving is for, and reading it as bursty
// would spend repairs on hiding congestion.
func (m *lossMeter) report() lossReport {
	w := m.window()
	r := lossReport{n: w.n, lost: w.lost}
	if m.nRuns >= minRuns {
		var sorted [burstRuns]uint8
		runs := sorted[:m.nRuns]
		copy(runs, m.runs[:m.nRuns])
		slices.Sort(runs)
		sum := 0
		for _, l := range runs {
			sum += int(l)
		}
		r.burst = float64(sum) / float64(len(runs))
		if runs[len(runs)/2] < 2 {
			r.burst = 1
		}
	}
	return r
}

// putReport writes a report; the burst travels in 1/256ths of a datagram,
// 0 when not known.
func putReport(dst []byte, rseq uint16, r lossReport) {
	dst[0] = tagReport
	binary.BigEndian.PutUint16(dst[1:], rseq)
	binary.BigEndian.PutUint16(dst[3:], uint16(min(r.n, 0xFFFF)))
	binary.BigEndian.PutUint16(dst[5:], uint16(min(r.lost, 0xFFFF)))
	binary.BigEndian.PutUint16(dst[7:], uint16(min(r.burst*256+0.5, 0xFFFF)))
}

// parseReport reads a report of at least reportLen bytes.
func parseReport(b []byte) (rseq uint16, r lossReport) {
	return be16(b[1:]), lossReport{n: int(be16(b[3:])), lost: int(be16(b[5:])), burst: float64(be16(b[7:])) / 256}
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
	var b [reportFlagsLen]byte
	putReport(b[:], p.rseq, m.report())
	b[reportLen] = flagResends | flagPadded
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
//
// The repairs and the depth rise at once and fall only when reports have
// called for less for lowerAfter.
func (p *txPeer) report(rseq uint16, w lossReport, flags byte, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reported {
		if d := int16(rseq - p.rseq); d <= 0 && d > -reportStale {
			return
		}
	}
	p.reported, p.rseq = true, rseq
	p.padded = flags&flagPadded != 0
	loss, burst := estimate(w)
	r, d := choose(p.c.cfg.GroupSize, p.c.cfg.Repair, loss, burst)
	if r >= p.repair || now.Sub(p.repairAt) >= lowerAfter {
		p.repair, p.repairAt = r, now
	}
	if loss >= p.loss || now.Sub(p.lossAt) >= lowerAfter {
		if loss != p.loss {
			p.setShort(loss)
		}
		p.lossAt = now
	}
	switch {
	case p.loss > 0:
		p.cleanSince = time.Time{}
	case p.cleanSince.IsZero():
		p.cleanSince = now
	}
	if d >= p.depth || now.Sub(p.depthAt) >= lowerAfter {
		p.depth, p.depthAt = d, now
	}
}

// setShort sets the loss rate the sender follows and the repairs of a
// plain group cut short at each size for it (chooseShort), computed here
// rather than at every flush: reports come at most every 10 ms, flushes
// at every small request.
func (p *txPeer) setShort(loss float64) {
	p.loss = loss
	g := p.c.cfg.GroupSize
	if cap(p.short) < g {
		p.short = make([]uint8, g)
	}
	p.short = p.short[:g]
	for n := 1; n < g; n++ {
		p.short[n] = uint8(chooseShort(n, p.c.cfg.Repair, loss))
	}
}
