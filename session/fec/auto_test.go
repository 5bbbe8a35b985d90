package fec

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestPolicyTable: the adaptive policy's choices at the loss rates and
// bursts that matter, and its two invariants: the repairs chosen keep the
// residual loss at or below the target (unless at the ceiling), and one
// fewer would not (unless at the floor).
func TestPolicyTable(t *testing.T) {
	cases := []struct {
		g, ceiling  int
		loss, burst float64
		r, d        int
	}{
		{16, 8, 0, 1, 1, 1},      // floor: 1/16 overhead
		{16, 8, 0, 6, 1, 1},      // no loss, no interleaving whatever the burst
		{16, 8, 0.001, 1, 1, 1},  // residual 1.6e-5
		{16, 8, 0.005, 1, 2, 1},  //
		{16, 8, 0.01, 1, 3, 1},   // 16+2 leaves 1.2e-4 at 1%
		{16, 8, 0.02, 1, 4, 1},   //
		{16, 8, 0.03, 1, 4, 1},   // 25%, below the 30% of 10+3
		{16, 8, 0.05, 1, 6, 1},   //
		{16, 8, 0.2, 1, 8, 1},    // at the ceiling
		{16, 2, 0.03, 1, 2, 1},   // an explicit ceiling holds
		{16, 0, 0.03, 1, 1, 1},   // a ceiling below the floor is the floor
		{8, 4, 0.01, 1, 2, 1},    //
		{32, 16, 0.01, 1, 3, 1},  //
		{16, 8, 0.01, 1.4, 3, 1}, // losses mostly single: no interleaving
		{16, 8, 0.01, 1.6, 3, 4}, // depth twice the burst
		{16, 8, 0.01, 2, 3, 4},   //
		{16, 8, 0.01, 4, 3, 8},   // 24 repairs over a block: runs over 24 are 1e-3 of runs
		{16, 8, 0.03, 4, 4, 8},   //
		{16, 8, 0.01, 10, 8, 8},  // depth capped: the ceiling
		{16, 2, 0.01, 4, 2, 8},   // an explicit ceiling holds
		{16, 8, 1, 1, 8, 1},      // everything lost: the ceiling
		{MaxGroupSize, 64, 0.1, 1, 29, 1},
	}
	for _, c := range cases {
		r, d := choose(c.g, c.ceiling, c.loss, c.burst)
		if r != c.r || d != c.d {
			t.Errorf("choose(%d, %d, %v, %v) = %d, %d; want %d, %d", c.g, c.ceiling, c.loss, c.burst, r, d, c.r, c.d)
		}
		ok := func(r int) bool {
			return residual(c.g, r, c.loss) <= residualTarget && (d == 1 || residualBurst(r, d, c.loss, c.burst) <= residualTarget)
		}
		if r < c.ceiling && !ok(r) {
			t.Errorf("%+v: residual above target with %d repairs", c, r)
		}
		if r > floorRepair && ok(r-1) {
			t.Errorf("%+v: %d repairs would do", c, r-1)
		}
	}
	// The measured settings of docs/benchmarks/fec.md.
	for _, c := range []struct {
		n, r   int
		p      float64
		lo, hi float64
	}{{16, 2, 0.01, 1e-4, 1.5e-4}, {16, 2, 0.03, 2e-3, 3e-3}, {10, 3, 0.03, 1e-4, 2e-4}} {
		if got := residual(c.n, c.r, c.p); got < c.lo || got > c.hi {
			t.Errorf("residual(%d, %d, %v) = %.2e, want %.1e..%.1e", c.n, c.r, c.p, got, c.lo, c.hi)
		}
	}
}

// TestLossMeter: the meter counts rate and runs over its window; a loss
// that begins shows at once (short window, from 3 runs on), one that ends
// fades only after the long window; a run counts as at most burstRunCap
// losses; its state is fixed in size.
func TestLossMeter(t *testing.T) {
	var m lossMeter
	for range 5000 {
		m.add(false)
	}
	if w := m.window(); w.lost != 0 || w.n < meterBlock*meterBlocks || w.n > meterBlock*(meterBlocks+1) {
		t.Fatalf("clean window %+v", w)
	}
	// One run of 20: counted as burstRunCap, and one run is not yet loss
	// that began (the long window).
	for i := range meterBlock {
		m.add(i < 20)
	}
	if w := m.window(); w.lost != burstRunCap || w.runs != 1 || w.n < meterBlock*meterBlocks {
		t.Fatalf("after one run of 20: %+v, want the long window with %d lost", w, burstRunCap)
	}
	// 3 losses in a row, four times, within one block: the short window.
	for i := range meterBlock {
		m.add(i%32 < 3)
	}
	w := m.window()
	if w.lost != 12 || w.runs != 4 || w.n > 2*meterBlock {
		t.Fatalf("after four more runs: %+v, want the short window with 12 lost in 4 runs", w)
	}
	for range meterBlock * (meterBlocks - 3) {
		m.add(false)
	}
	if w := m.window(); w.lost != burstRunCap+12 || w.n < meterBlock*meterBlocks {
		t.Fatalf("loss ended: %+v, want it still in the long window", w)
	}
	for range meterBlock * 3 {
		m.add(false)
	}
	if w := m.window(); w.lost != 0 {
		t.Fatalf("loss long past: %+v", w)
	}
}

// inject hands c a datagram as if read from its socket (the test holds
// the read side: no ReadFrom runs on c).
func inject(c *Conn, b []byte, from net.Addr) { injectAt(c, b, from, time.Now()) }

// injectAt is inject with the time the datagram is taken to arrive.
func injectAt(c *Conn, b []byte, from net.Addr, at time.Time) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	c.receive(b, from, nil, at)
}

func report(rseq uint16, n, lost int, burst float64) []byte {
	b := make([]byte, reportLen)
	putReport(b, rseq, lossReport{n, lost, burst})
	return b
}

func (p *txPeer) state() (repair, depth int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.repair, p.depth
}

// TestReportOrdering: the sender follows the newest report; reordered
// (older) and duplicated reports are ignored, one far older is taken as a
// restarted peer; short reports are dropped. Before any report the
// repairs are at the floor.
func TestReportOrdering(t *testing.T) {
	p := newPair(t, Config{GroupSize: 16, Auto: true})
	from := p.b.LocalAddr()
	tx := p.a.txPeer(from)
	// The policy is TestPolicyTable's; here only which report counts.
	policy := func(n, lost int, burst float64) (int, int) {
		l, b := estimate(lossReport{n, lost, burst})
		return choose(16, maxAutoRepair(16), l, b)
	}
	at := time.Now()
	step := func(b []byte, r, d int) {
		t.Helper()
		injectAt(p.a, b, from, at)
		if gr, gd := tx.state(); gr != r || gd != d {
			t.Fatalf("after report % x: repairs %d depth %d, want %d %d", b, gr, gd, r, d)
		}
	}
	if r, d := tx.state(); r != floorRepair || d != 1 {
		t.Fatalf("before any report: %d %d", r, d)
	}
	r3, d3 := policy(1000, 30, 1) // 3% random
	rb, db := policy(1000, 40, 4) // 4% in bursts of 4
	r1, d1 := policy(1000, 10, 1) // 1% random
	if r3 == floorRepair || db == 1 || r1 == r3 {
		t.Fatalf("policy: %d %d, %d %d, %d %d", r3, d3, rb, db, r1, d1)
	}
	step(report(100, 1000, 30, 1), r3, d3)
	step(report(99, 1000, 0, 0), r3, d3)  // reordered: older
	step(report(100, 1000, 0, 0), r3, d3) // duplicate
	step(report(101, 1000, 40, 4), rb, db)
	step(report(101, 1000, 0, 0)[:5], rb, db) // short: dropped
	step(report(102, 1000, 0, 0), rb, db)     // less is called for: not yet
	at = at.Add(lowerAfter)
	step(report(103, 1000, 0, 0), floorRepair, 1)      // called for lowerAfter: lowered
	step(report(103-reportStale, 1000, 10, 1), r1, d1) // far older: the peer restarted
	if st := p.a.Stats(); st.ReportsReceived != 7 || st.Mismatched != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// wireLog records the repair headers a sends.
type wireLog struct {
	mu      sync.Mutex
	repairs []repairHdr
}

type repairHdr struct {
	tag       byte
	n, r, str int
}

func (w *wireLog) add(b []byte) {
	if b[0] != tagRepair && b[0] != tagInterleaved {
		return
	}
	h := repairHdr{tag: b[0], n: int(b[5]), r: int(b[6]), str: 1}
	if b[0] == tagInterleaved {
		h.str = int(b[7]>>5) + 1
	}
	w.mu.Lock()
	w.repairs = append(w.repairs, h)
	w.mu.Unlock()
}

// lastFull returns the repair count of the last full group seen (-1: none).
func (w *wireLog) lastFull(g int) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := len(w.repairs) - 1; i >= 0; i-- {
		if w.repairs[i].n == g {
			return w.repairs[i].r
		}
	}
	return -1
}

func (w *wireLog) all() []repairHdr {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]repairHdr(nil), w.repairs...)
}

// drain reads from c until it is closed (the sender's side must read to
// receive reports); the returned function closes c and waits.
func drain(c *Conn) (stop func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			if _, _, err := c.ReadFrom(buf); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				return
			}
		}
	}()
	return func() { c.Close(); <-done }
}

// TestAutoFollowsLoss: over a link that loses 1 in 25 data datagrams
// (4%) and loses, duplicates and reorders reports, the sender starts at
// the floor (the first loss is still rebuilt), raises its repairs once
// the receiver reports, and goes back to the floor when the loss stops,
// in groups twice as large (span). Groups close by size, after 20 ms of
// idleness or 40 ms after they opened: a round's datagrams need not fill
// its last group once the group size changes, and a timer that fires
// while a slow sender is still writing re-arms for FlushMax, which must
// therefore be finite too.
func TestAutoFollowsLoss(t *testing.T) {
	const g = 16
	p := newPair(t, Config{GroupSize: g, Auto: true, Hold: forever, FlushIdle: 20 * time.Millisecond, FlushMax: 40 * time.Millisecond})
	stop := drain(p.a)
	defer stop()
	var wire wireLog
	var mu sync.Mutex
	lossy, nData, nReport := true, 0, 0
	var heldReport []byte
	p.net.setLink(func(from, to string, b []byte, emit func([]byte)) {
		mu.Lock()
		defer mu.Unlock()
		switch b[0] {
		case tagData, tagPadded:
			nData++
			if lossy && nData%25 == 5 {
				return
			}
		case tagRepair, tagInterleaved:
			wire.add(b)
		case tagReport:
			nReport++
			switch nReport % 4 {
			case 0: // lost
			case 1: // duplicated
				emit(b)
				emit(b)
			case 2: // reordered behind the next one
				heldReport = append([]byte(nil), b...)
			case 3:
				emit(b)
				emit(heldReport)
			}
			return
		}
		emit(b)
	})
	sent := 0
	round := func() {
		p.send(t, sent, sent+4*g)
		if got := p.read(t, 4*g); len(got) != 4*g {
			t.Fatalf("round at %d: got %d of %d", sent, len(got), 4*g)
		}
		sent += 4 * g
	}
	round()
	if r := wire.all(); len(r) == 0 || r[0].r != floorRepair {
		t.Fatalf("first group's repairs %v, want the floor %d", r, floorRepair)
	}
	if st := p.b.Stats(); st.Recovered == 0 {
		t.Fatalf("the first loss was not rebuilt: %+v", st)
	}
	// The windows measure 4% give or take a datagram.
	lo, _ := choose(g, maxAutoRepair(g), 0.035, 1)
	hi, _ := choose(g, maxAutoRepair(g), 0.05, 1)
	deadline := time.Now().Add(safety)
	for wire.lastFull(g) < lo && time.Now().Before(deadline) {
		round()
	}
	if r := wire.lastFull(g); r < lo || r > hi {
		t.Fatalf("repairs %d under 4%% loss, want %d..%d", r, lo, hi)
	}
	mu.Lock()
	lossy = false
	mu.Unlock()
	for wire.lastFull(2*g) != floorRepair && time.Now().Before(deadline) {
		round()
	}
	if r := wire.lastFull(2 * g); r != floorRepair {
		t.Fatalf("repairs %d of a group of %d after the loss stopped, want %d", r, 2*g, floorRepair)
	}
	a, b := p.a.Stats(), p.b.Stats()
	if b.Unrecoverable != 0 || b.ReportsSent == 0 || a.ReportsReceived == 0 || a.Mismatched != 0 {
		t.Fatalf("stats a %+v b %+v", a, b)
	}
	for _, h := range wire.all() {
		if h.tag != tagRepair {
			t.Fatalf("interleaved repair %+v under single losses", h)
		}
	}
}

// TestInterleavingRecoversBurst: with one repair per group, a burst of 4
// consecutive losses is beyond a plain group but rebuilt once a report of
// bursts of 2 made the sender spread each block over 4 groups.
func TestInterleavingRecoversBurst(t *testing.T) {
	const g = 8
	burst := map[int]bool{10: true, 11: true, 12: true, 13: true}
	for _, interleave := range []bool{false, true} {
		t.Run(fmt.Sprint("interleave=", interleave), func(t *testing.T) {
			// Repair 1 is the ceiling: the repairs cannot grow, only the
			// depth can. Interleaved, the block's repairs follow 32
			// datagrams after the burst: the hold never ends, so only
			// recovery delivers (a short hold expired under CI load and
			// gave the burst up). Plain, the hold must end to give the
			// burst up.
			hold := 20 * time.Millisecond
			if interleave {
				hold = forever
			}
			p := newPair(t, Config{GroupSize: g, Repair: 1, Auto: true, Hold: hold,
				FlushIdle: forever, FlushMax: forever})
			if interleave {
				inject(p.a, report(1, 1000, 40, 2), p.b.LocalAddr()) // depth 4
			}
			var wire wireLog
			drop := dropOn(burst, nil)
			p.net.setLink(func(from, to string, b []byte, emit func([]byte)) {
				if from == p.a.LocalAddr().String() {
					wire.add(b)
				}
				drop(from, to, b, emit)
			})
			p.send(t, 0, 64)
			st := p.b.Stats()
			if !interleave {
				got := p.read(t, 60)
				if len(got) != 60 {
					t.Fatalf("got %d", len(got))
				}
				if st = p.b.Stats(); st.Unrecoverable != 4 {
					t.Fatalf("a plain group rebuilt a burst beyond its repair: %+v", st)
				}
				return
			}
			got := p.read(t, 64)
			if fmt.Sprint(got) != fmt.Sprint(seq(0, 64)) {
				t.Fatalf("got %v", got)
			}
			if st = p.b.Stats(); st.Recovered != 4 || st.Unrecoverable != 0 {
				t.Fatalf("stats %+v", st)
			}
			hs := wire.all()
			if len(hs) != 8 {
				t.Fatalf("repairs %+v, want 2 blocks of 4 groups with 1 each", hs)
			}
			for _, h := range hs {
				if h != (repairHdr{tagInterleaved, g, 1, 4}) {
					t.Fatalf("repair %+v", h)
				}
			}
			tx := p.a.txPeer(p.b.LocalAddr())
			tx.mu.Lock()
			// One block's shards, and one repair buffer per group.
			if len(tx.shards) > 4*g || len(tx.rep) > 4*1 {
				t.Errorf("send buffers grew: %d shards, %d repair buffers", len(tx.shards), len(tx.rep))
			}
			tx.mu.Unlock()
		})
	}
}

// TestSparseBlockNotInterleaved: at depth 4 a block cut short by idleness
// with fewer than 4 datagrams per group is one plain group: a small
// request gets one repair, not one per datagram, and waits no longer.
func TestSparseBlockNotInterleaved(t *testing.T) {
	// Bounds far above any scheduling pause keep the three datagrams,
	// sent back to back, in one block under load.
	p := newPair(t, Config{GroupSize: 16, Auto: true, Hold: forever, FlushIdle: 500 * time.Millisecond, FlushMax: 500 * time.Millisecond})
	inject(p.a, report(1, 1000, 40, 4), p.b.LocalAddr())
	var wire wireLog
	p.net.setLink(func(from, to string, b []byte, emit func([]byte)) {
		if from == p.a.LocalAddr().String() {
			wire.add(b)
		}
		emit(b)
	})
	p.send(t, 0, 3)
	if got := p.read(t, 3); len(got) != 3 {
		t.Fatalf("got %v", got)
	}
	deadline := time.Now().Add(safety)
	for len(wire.all()) == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	r, d := choose(16, maxAutoRepair(16), (40+math.Sqrt(40*4))/1000, 4) // estimate of 40 in 1000, runs of 4
	if d == 1 {
		t.Fatal("the report did not call for interleaving")
	}
	want := repairHdr{tagRepair, 3, max(repairCount(3, 16, r), chooseShort(3, maxAutoRepair(16), (40+math.Sqrt(40*4))/1000)), 1}
	if hs := wire.all(); len(hs) == 0 || hs[0] != want {
		t.Fatalf("repairs %+v, want %+v first", hs, want)
	}
}

// TestShortGroupPolicy: a group cut short gets the fewest repairs with
// which it loses data at most once in 1/residualTarget groups, within the
// ceiling; at no loss, the floor.
func TestShortGroupPolicy(t *testing.T) {
	cases := []struct {
		n, ceiling int
		loss       float64
		r          int
	}{
		{1, 4, 0, 1},     // no loss: the floor
		{8, 4, 0, 1},     //
		{1, 4, 0.01, 1},  // 1e-4: one lost pair in 10^4
		{2, 4, 0.01, 2},  //
		{1, 4, 0.03, 2},  // 2.7e-5
		{2, 4, 0.03, 3},  // 2 would leave 1.1e-4
		{4, 4, 0.03, 3},  //
		{8, 4, 0.03, 4},  // the ceiling: 16+4 at full size
		{15, 4, 0.03, 4}, //
		{2, 1, 0.03, 1},  // an explicit ceiling holds
	}
	for _, c := range cases {
		r := chooseShort(c.n, c.ceiling, c.loss)
		ok := func(r int) bool { return groupLost(c.n, r, c.loss) <= residualTarget }
		if r < c.ceiling && !ok(r) {
			t.Errorf("chooseShort(%d, %d, %v) = %d: group loss %.2e above target", c.n, c.ceiling, c.loss, r, groupLost(c.n, r, c.loss))
		}
		if r > floorRepair && ok(r-1) {
			t.Errorf("chooseShort(%d, %d, %v) = %d: %d would do", c.n, c.ceiling, c.loss, r, r-1)
		}
		if r != c.r {
			t.Errorf("chooseShort(%d, %d, %v) = %d, want %d", c.n, c.ceiling, c.loss, r, c.r)
		}
	}
	// "on" holds short groups to the rate its setting is made for.
	for _, c := range []struct {
		n, r   int
		lo, hi float64
	}{{16, 2, 0.008, 0.01}, {16, 4, 0.03, 0.04}, {10, 3, 0.025, 0.035}} {
		p := impliedLoss(c.n, c.r)
		if p < c.lo || p > c.hi || residual(c.n, c.r, p) > residualTarget || residual(c.n, c.r, p*1.01) <= residualTarget {
			t.Errorf("impliedLoss(%d, %d) = %v, want the highest rate within the target, in %v..%v", c.n, c.r, p, c.lo, c.hi)
		}
	}
	// Proportional repairs at 3% left short groups far above the target:
	// the reason for chooseShort.
	if g := groupLost(2, repairCount(2, 16, 4), 0.03); g < 20*residualTarget {
		t.Errorf("group of 2 with proportional repairs loses %.2e", g)
	}
}

// TestShortGroupsAfterLossReport: once the peer reports loss, a lone
// datagram and a small burst (closed by idleness) get chooseShort's
// repairs, and a datagram lost from them is rebuilt; before any report
// they get the floor.
func TestShortGroupsAfterLossReport(t *testing.T) {
	// a's reads are not drained: the report is injected, and b's own
	// reports must not replace it.
	p := newPair(t, Config{GroupSize: 16, Auto: true, Hold: forever, FlushIdle: 5 * time.Millisecond, FlushMax: 5 * time.Millisecond})
	var wire wireLog
	var mu sync.Mutex
	dropData := -1 // index of the data datagram from a to drop
	nData := 0
	p.net.setLink(func(from, to string, b []byte, emit func([]byte)) {
		if from == p.a.LocalAddr().String() {
			wire.add(b)
			if _, _, ok := parseData(b); ok {
				mu.Lock()
				drop := nData == dropData
				nData++
				mu.Unlock()
				if drop {
					return
				}
			}
		}
		emit(b)
	})
	waitRepairs := func(k int) []repairHdr {
		t.Helper()
		deadline := time.Now().Add(safety)
		for len(wire.all()) < k && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		return wire.all()
	}
	p.send(t, 0, 1)
	if got := p.read(t, 1); len(got) != 1 {
		t.Fatalf("got %v", got)
	}
	if hs := waitRepairs(1); len(hs) != 1 || hs[0] != (repairHdr{tagRepair, 1, floorRepair, 1}) {
		t.Fatalf("before any report: repairs %+v", hs)
	}
	inject(p.a, report(1, 1000, 30, 1), p.b.LocalAddr())
	loss, _ := estimate(lossReport{1000, 30, 1})
	for _, n := range []int{1, 3} {
		want := chooseShort(n, maxAutoRepair(16), loss)
		if want <= repairCount(n, 16, maxAutoRepair(16)) {
			t.Fatalf("chooseShort(%d) = %d is no more than proportional: the test shows nothing", n, want)
		}
		before := len(wire.all())
		mu.Lock()
		dropData = nData // the group's first datagram is lost
		mu.Unlock()
		p.send(t, 0, n)
		if got := p.read(t, n); len(got) != n {
			t.Fatalf("group of %d: got %v", n, got)
		}
		hs := waitRepairs(before + want)[before:]
		if len(hs) != want {
			t.Fatalf("group of %d: repairs %+v, want %d", n, hs, want)
		}
		for _, h := range hs {
			if h != (repairHdr{tagRepair, n, want, 1}) {
				t.Fatalf("group of %d: repair %+v, want %d repairs", n, h, want)
			}
		}
	}
	if st := p.b.Stats(); st.Recovered != 2 || st.Unrecoverable != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestShortGroupBudget: short groups' extra repairs come from a budget
// that a quiet sender fills up to extraBurst, and that refills by the
// full groups' repair ratio per data datagram and by one per extraEvery.
func TestShortGroupBudget(t *testing.T) {
	p := newPair(t, Config{GroupSize: 16, Repair: 4, Auto: true})
	tx := p.a.txPeer(p.b.LocalAddr())
	tx.mu.Lock()
	defer tx.mu.Unlock()
	now := time.Now()
	steps := []struct {
		data    uint32        // data datagrams sent since the last step
		elapsed time.Duration // time since the last step
		want    int
		got     int
	}{
		{0, 0, 100, extraBurst}, // a new (quiet) sender: the whole burst
		{0, 0, 1, 0},            // spent
		{8, 0, 5, 2},            // 8 datagrams at 4/16
		{2, 0, 5, 0},            // half a repair so far
		{2, 0, 5, 1},            // one
		{0, 3 * extraEvery, 5, 3},
		{0, 100 * extraEvery, extraBurst + 5, extraBurst}, // capped
	}
	for i, st := range steps {
		tx.seq += st.data
		now = now.Add(st.elapsed)
		if got := tx.spendExtra(st.want, now); got != st.got {
			t.Fatalf("step %d %+v: got %d", i, st, got)
		}
	}
}

// TestShortGroupsOn: with a fixed setting a lone datagram's group gets
// the repairs chooseShort gives at the rate the setting is made for (2
// with 16+4), not the proportional 1.
func TestShortGroupsOn(t *testing.T) {
	p := newPair(t, Config{GroupSize: 16, Repair: 4, Hold: forever, FlushIdle: 5 * time.Millisecond, FlushMax: 5 * time.Millisecond})
	var wire wireLog
	p.net.setLink(func(from, to string, b []byte, emit func([]byte)) {
		if from == p.a.LocalAddr().String() {
			wire.add(b)
		}
		emit(b)
	})
	want := chooseShort(1, 4, impliedLoss(16, 4))
	if want != 2 {
		t.Fatalf("chooseShort for 16+4: %d", want)
	}
	p.send(t, 0, 1)
	if got := p.read(t, 1); len(got) != 1 {
		t.Fatalf("got %v", got)
	}
	deadline := time.Now().Add(safety)
	for len(wire.all()) < want && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if hs := wire.all(); len(hs) != want || hs[0] != (repairHdr{tagRepair, 1, want, 1}) {
		t.Fatalf("repairs %+v, want %d for the group of 1", hs, want)
	}
}

// TestAutoOnMismatchWarns: "on" and "auto" share the data framing, so
// traffic flows both ways; the "on" end drops the reports with one WARN
// naming both settings, and the "auto" end warns once that no report
// comes.
func TestAutoOnMismatchWarns(t *testing.T) {
	n := newMemNet()
	logs := &syncBuf{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	auto, err := New(n.listen(1), Config{GroupSize: 16, Auto: true, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	on, err := New(n.listen(2), Config{GroupSize: 16, Repair: 2, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	stop := drain(on)
	defer stop()
	defer auto.Close()
	for i := range silentAfter {
		if _, err := auto.WriteTo(payload(i), on.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(safety)
	for on.Stats().DataReceived < 100 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	// auto reports what it receives from on.
	for i := range 200 {
		if _, err := on.WriteTo(payload(i), auto.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 2048)
	got := 0
	for got < 200 && time.Now().Before(deadline) {
		auto.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if n, _, err := auto.ReadFrom(buf); err == nil {
			if !bytes.Equal(buf[:n], payload(index(buf[:n]))) {
				t.Fatal("corrupted")
			}
			got++
		}
	}
	if got != 200 {
		t.Fatalf("auto received %d of 200 from on", got)
	}
	// The counter goes up just before the WARN is written: wait for the
	// line itself.
	for !strings.Contains(logs.String(), "ignoring FEC loss reports") && time.Now().Before(deadline) {
		auto.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		auto.ReadFrom(buf)
		on.WriteTo(payload(0), auto.LocalAddr())
	}
	l := logs.String()
	if strings.Count(l, "ignoring FEC loss reports") != 1 || !strings.Contains(l, `transport.fec = \"auto\" and this end \"on\"`) {
		t.Fatalf("on end: stats %+v, logs:\n%s", on.Stats(), l)
	}
	if strings.Count(l, "no FEC loss reports from the peer") != 1 {
		t.Fatalf("auto end: logs:\n%s", l)
	}
}

// TestEstimate: the rate the policy works with is the measured one plus
// one standard deviation, wider for losses in runs; no loss is 0; an
// unknown burst is 1.
func TestEstimate(t *testing.T) {
	for _, c := range []struct {
		w           lossReport
		loss, burst float64
	}{
		{lossReport{0, 0, 0}, 0, 1},
		{lossReport{1000, 0, 3}, 0, 3},
		{lossReport{1000, 9, 1}, 0.012, 1},
		{lossReport{1000, 16, 4}, 0.024, 4},
		{lossReport{1000, 4, 0}, 0.006, 1}, // burst not known yet
		{lossReport{4, 4, 1}, 1, 1},
	} {
		loss, burst := estimate(c.w)
		if math.Abs(loss-c.loss) > 1e-9 || burst != c.burst {
			t.Errorf("estimate(%+v) = %v, %v; want %v, %v", c.w, loss, burst, c.loss, c.burst)
		}
	}
}

// TestReportReachesSenderAcrossAddressForms: a report read from the
// peer as an IPv4-mapped IPv6 address (a dual-stack socket) updates the
// sender that writes to the plain IPv4 address (what the dialer gave
// quic-go), not a sender of its own.
func TestReportReachesSenderAcrossAddressForms(t *testing.T) {
	p := newPair(t, Config{GroupSize: 16, Auto: true})
	v4 := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2).To4(), Port: 9}
	mapped := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2).To16(), Port: 9}
	tx := p.a.txPeer(v4)
	inject(p.a, report(1, 1000, 30, 1), mapped)
	if r, _ := tx.state(); r == floorRepair {
		t.Fatalf("the report did not reach the sender to %s (repairs %d)", v4, r)
	}
	p.a.txMu.Lock()
	n := len(p.a.tx)
	p.a.txMu.Unlock()
	if n != 1 {
		t.Fatalf("%d senders, want 1", n)
	}
}

// TestInterleavedRepairsRoundRobin: an interleaved group keeps its full
// repair count however few datagrams it holds (a burst costs every group
// alike), and the repairs of a block go out round-robin over its groups,
// so a burst among them costs each group at most one.
func TestInterleavedRepairsRoundRobin(t *testing.T) {
	// Blocks close only when the test says: a timer firing mid-send on a
	// loaded machine would cut the block elsewhere.
	p := newPair(t, Config{GroupSize: 16, Repair: 2, Auto: true, Hold: forever, FlushIdle: forever, FlushMax: forever})
	inject(p.a, report(1, 1000, 40, 2), p.b.LocalAddr()) // bursts of 2: depth 4, repairs at the ceiling 2
	type rh struct{ off, idx, n, r int }
	var mu sync.Mutex
	var seen []rh
	var first uint32
	haveFirst := false
	p.net.setLink(func(from, to string, b []byte, emit func([]byte)) {
		mu.Lock()
		switch {
		case (b[0] == tagData || b[0] == tagPadded) && !haveFirst:
			first, haveFirst = be32(b[1:5]), true
		case b[0] == tagInterleaved:
			seen = append(seen, rh{int(be32(b[1:5]) - first), int(b[7] & 0x1F), int(b[5]), int(b[6])})
		}
		mu.Unlock()
		emit(b)
	})
	p.send(t, 0, 20)
	tx := p.a.txPeer(p.b.LocalAddr())
	tx.mu.Lock()
	tx.flushLocked() // a block cut short at 20: 4 groups of 5
	err := tx.sendOut()
	tx.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if got := p.read(t, 20); len(got) != 20 {
		t.Fatalf("got %d", len(got))
	}
	deadline := time.Now().Add(safety)
	for time.Now().Before(deadline) {
		mu.Lock()
		k := len(seen)
		mu.Unlock()
		if k >= 8 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	var want []rh
	for idx := range 2 {
		for off := range 4 {
			want = append(want, rh{off, idx, 5, 2})
		}
	}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Fatalf("repairs (group offset, index, n, r) %v, want %v", seen, want)
	}
}

// TestBurstMeasure: the reported burst is the mean length of the last
// runs of losses, each counted as at most burstRunCap, known after
// minRuns runs, and 1 while the median run is a single loss: long runs
// now and then among single losses (a queue overflowing) do not read as
// bursty loss.
func TestBurstMeasure(t *testing.T) {
	var m lossMeter
	lose := func(k int) {
		for range k {
			m.add(true)
		}
		for range 50 {
			m.add(false)
		}
	}
	lose(4)
	lose(4)
	if b := m.report().burst; b != 0 {
		t.Fatalf("burst %v after 2 runs, want unknown", b)
	}
	lose(4)
	if b := m.report().burst; b != 4 {
		t.Fatalf("burst %v after 3 runs of 4", b)
	}
	var single lossMeter
	m = single
	for range burstRuns - 1 {
		lose(1)
	}
	lose(20)
	lose(20)
	lose(20)
	if b := m.report().burst; b != 1 {
		t.Fatalf("burst %v with the median run 1, want 1 (no interleaving)", b)
	}
	m = single
	for range 4 {
		lose(1)
		lose(2)
		lose(20) // counted as burstRunCap
	}
	want := float64(4*(1+2+burstRunCap)) / 12
	if b := m.report().burst; b != want {
		t.Fatalf("burst %v, want %v (median 2: the mean, runs capped)", b, want)
	}
}

// TestCleanLinkDoublesGroups: once the loss the sender follows has been
// zero for lowerAfter, a full group holds twice GroupSize datagrams with
// the floor's one repair (span); before that (a session's first second)
// and from the first report that shows loss, GroupSize. Every datagram
// arrives. Report times are injected, so no test waits lowerAfter.
func TestCleanLinkDoublesGroups(t *testing.T) {
	const g = 8
	start := func(t *testing.T, firstReport time.Time) (groups func(n int) string) {
		p := newPair(t, Config{GroupSize: g, Auto: true, Hold: forever, FlushIdle: forever, FlushMax: forever})
		var wire wireLog
		p.net.setLink(func(from, to string, b []byte, emit func([]byte)) {
			if from == p.a.LocalAddr().String() {
				wire.add(b)
			}
			emit(b)
		})
		injectAt(p.a, report(1, 1000, 0, 0), p.b.LocalAddr(), firstReport)
		sent, rseq := 0, uint16(1)
		return func(n int) string {
			t.Helper()
			before := len(wire.all())
			p.send(t, sent, sent+n)
			if got := p.read(t, n); fmt.Sprint(got) != fmt.Sprint(seq(sent, sent+n)) {
				t.Fatalf("got %v, want %v", got, seq(sent, sent+n))
			}
			sent += n
			// The next report: 2% loss, for the caller's next step.
			rseq++
			inject(p.a, report(rseq, 1000, 20, 1), p.b.LocalAddr())
			return fmt.Sprint(wire.all()[before:])
		}
	}
	r2, _ := choose(g, maxAutoRepair(g), (20+math.Sqrt(20))/1000, 1)
	full := func(n, r, k int) string {
		var hs []repairHdr
		for range k {
			for range r {
				hs = append(hs, repairHdr{tagRepair, n, r, 1})
			}
		}
		return fmt.Sprint(hs)
	}
	t.Run("no loss for less than lowerAfter", func(t *testing.T) {
		groups := start(t, time.Now())
		if got, want := groups(2*g), full(g, floorRepair, 2); got != want {
			t.Fatalf("repairs %s, want %s", got, want)
		}
	})
	t.Run("no loss for lowerAfter, then loss", func(t *testing.T) {
		groups := start(t, time.Now().Add(-lowerAfter))
		if got, want := groups(2*g), full(2*g, floorRepair, 1); got != want {
			t.Fatalf("no loss: repairs %s, want %s", got, want)
		}
		if got, want := groups(2*g), full(g, r2, 2); got != want {
			t.Fatalf("after a report of loss: repairs %s, want %s", got, want)
		}
	})
}
