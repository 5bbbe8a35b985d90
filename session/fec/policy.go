package fec

import (
	"math"
	"time"
)

// Policy of the adaptive mode (Config.Auto): how many repairs a full group
// gets, and over how many groups consecutive datagrams are spread, for the
// loss rate and mean loss burst the peer reports.

const (
	// residualTarget is the fraction of data datagrams the policy accepts
	// losing after recovery. quic-go halves its window at each loss it
	// sees; at 1e-4 a 1 MiB transfer (~850 datagrams) sees one in ~12
	// transfers. Measured: 16+2 at 1% (residual 1.2e-4) kept a 1 MiB GET
	// under nginx's time, 16+2 at 3% (2.7e-3) made it 6×, 10+3 at 3%
	// (1.4e-4) under nginx again (docs/benchmarks/fec.md).
	residualTarget = 1e-4

	// floorRepair is the repair count at no measured loss, and before
	// the first report: one repair per group still rebuilds the first
	// loss that comes before any report can say so, at 1/GroupSize
	// overhead.
	floorRepair = 1

	// MaxDepth bounds the interleaving depth (groups a block of
	// consecutive datagrams is spread over). It travels in 3 bits of an
	// interleaved repair's header.
	MaxDepth = 8

	// minPerGroup: a block is interleaved only when each of its groups
	// gets at least this many datagrams; a sparser block (a small request,
	// acknowledgements) is one plain group, so its repairs stay few and
	// it waits for nothing.
	minPerGroup = 4

	// extraEvery and extraBurst bound the repairs short groups get beyond
	// the proportional count (txPeer.spendExtra): one more per 10 ms of
	// time, up to 32 saved.
	extraEvery = 10 * time.Millisecond
	extraBurst = 32

	// minRuns is how many runs of losses the receiver must have seen
	// before it reports their mean length as a burst length.
	minRuns = 3
)

// estimate turns a report into the loss rate and mean burst for choose.
// The rate is one standard deviation above the count: a window of ~1000
// datagrams holds ~10 losses at 1%, and taking 7 of them for 0.7% picks
// repairs that leave more than the residual target, which costs a halved
// congestion window, where an over-estimate costs a repair. Losses that
// come in runs of b are lost/b independent events, so the count's
// deviation is sqrt(lost·b). No loss is no loss: the floor. An unknown
// burst (fewer than minRuns runs seen) is 1.
func estimate(w lossReport) (loss, burst float64) {
	burst = max(1, w.burst)
	if w.n <= 0 || w.lost <= 0 {
		return 0, burst
	}
	l := float64(w.lost)
	loss = min(1, (l+math.Sqrt(l*burst))/float64(w.n))
	return loss, burst
}

// residual is the expected fraction of a group's n data datagrams that
// are neither received nor rebuilt when each of its n data and r repair
// datagrams is lost independently with probability p: a group that lost
// k > r of its n+r datagrams loses, on average, k·n/(n+r) of its data.
func residual(n, r int, p float64) float64 { return lossTail(n, r, p, true) }

// groupLost is the probability that a group of n data and r repairs,
// each lost independently with probability p, loses more than r of them:
// the group then loses data for good.
func groupLost(n, r int, p float64) float64 { return lossTail(n, r, p, false) }

// lossTail sums P(K = k) for K ~ Binomial(n+r, p) over k > r, each term
// weighted by k/(n+r) when perDatagram.
func lossTail(n, r int, p float64, perDatagram bool) float64 {
	if p <= 0 {
		return 0
	}
	if p >= 1 {
		return 1
	}
	m := n + r
	res := 0.0
	for k := r + 1; k <= m; k++ {
		t := binomPMF(m, k, p)
		if perDatagram {
			t *= float64(k) / float64(m)
		}
		res += t
	}
	return res
}

// chooseShort is the repairs of a plain group cut short at n datagrams
// (a small request, the start or end of a transfer, paced sending), for
// a reported loss rate: the fewest, from the floor up to the ceiling,
// with which the group loses data at most once in 1/residualTarget
// groups.
//
// Full groups are held to a residual per datagram; a short group cannot
// be: one lost datagram of a group of 2 is as much a loss event for
// quic-go as one of a group of 16, and short groups are where the
// session spends its time at a small congestion window (requests, the
// first round trips of a transfer). A loss event there sets quic-go's
// slow-start threshold to that small window for good: it does not
// restart slow start after idle, and its Reno congestion avoidance grows
// the window by one packet a round trip, so every later bulk transfer
// crawls (measured at 3% loss: 1 MiB in 0.6-1.2 s against 165 ms, for a
// whole run, decided by whether such an event happened early;
// docs/benchmarks/fec.md). Proportional repairs (a quarter of the full
// count for a quarter of the datagrams) left a group of 2 with 1 repair
// losing data once in ~400 groups at 3%.
func chooseShort(n, ceiling int, loss float64) int {
	hi := max(floorRepair, ceiling)
	for r := floorRepair; r < hi; r++ {
		if groupLost(n, r, loss) <= residualTarget {
			return r
		}
	}
	return hi
}

// impliedLoss is the loss rate a fixed setting ("on": r repairs per full
// group of n) is made for: the highest at which a full group still meets
// residualTarget. Short groups of "on" are held to that rate
// (chooseShort), so a setting that protects its full groups protects its
// small requests alike.
func impliedLoss(n, r int) float64 {
	lo, hi := 0.0, 0.5
	for range 40 {
		mid := (lo + hi) / 2
		if residual(n, r, mid) <= residualTarget {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo
}

// binomPMF is P(K = k) for K ~ Binomial(m, p), through logarithms so
// that C(m, k) never overflows.
func binomPMF(m, k int, p float64) float64 {
	lm, _ := math.Lgamma(float64(m + 1))
	lk, _ := math.Lgamma(float64(k + 1))
	lmk, _ := math.Lgamma(float64(m - k + 1))
	return math.Exp(lm - lk - lmk + float64(k)*math.Log(p) + float64(m-k)*math.Log1p(-p))
}

// maxAutoRepair is the default ceiling of the adaptive repair count for a
// group size (Config.Repair 0 in Auto): a quarter of the group (25%
// overhead), which covers ~3% random loss at group size 16. Repairs are
// load that quic-go's congestion control does not see: when the loss is
// the bottleneck's queue overflowing (quic-go's own slow start), more
// repairs overflow it further, and the reports ask for more still;
// measured with half the group as the ceiling, a 1 MiB GET at 1% random
// loss put 1.75 MiB on the link and the receiver measured 8-18% loss.
func maxAutoRepair(groupSize int) int {
	return min(MaxRepair, max(floorRepair, groupSize/4))
}

// DefaultAutoRepair is the ceiling of the adaptive repairs per full group
// of groupSize when Config.Repair is 0.
func DefaultAutoRepair(groupSize int) int { return maxAutoRepair(groupSize) }

// residualBurst is the expected fraction of data datagrams lost for good
// when losses come in runs of geometric length with mean b (P(L > k) =
// (1-1/b)^k) starting at rate p/b per datagram, and a block is spread
// over depth groups of r repairs each: a run of up to r·depth costs no
// group more than r and is rebuilt; a longer one (probability
// (1-1/b)^(r·depth)) is lost whole, r·depth + b datagrams on average.
func residualBurst(r, depth int, p, b float64) float64 {
	if p <= 0 {
		return 0
	}
	k := float64(r * depth)
	return p / b * math.Pow(1-1/b, k) * (k + b)
}

// choose is the adaptive policy: for a full group of groupSize data
// datagrams, a reported loss rate (0..1) and mean run length of losses
// (burst, >= 1), it returns the repairs per full group and the
// interleaving depth. ceiling bounds the repairs (at least floorRepair).
// It is a pure function of its arguments.
//
// Random loss (burst below 1.5): depth 1, and the fewest repairs, from
// the floor up to the ceiling, that keep the residual loss of a full
// group (binomial tail) at or below residualTarget.
//
// Runs of losses: what rebuilds a run is the repairs of all the groups it
// is spread over, r·depth, so the heavy tail of run lengths (a third of
// the runs of mean 4 are longer than 4) calls for r·depth well above the
// mean. Deeper interleaving buys that capacity at the same overhead r/n:
// depth is twice the burst, at most MaxDepth, and the repairs the fewest
// that meet the target under both the burst model (residualBurst) and the
// binomial one.
func choose(groupSize, ceiling int, loss, burst float64) (repair, depth int) {
	depth = 1
	if loss > 0 && burst >= 1.5 {
		depth = min(MaxDepth, int(math.Ceil(2*burst)))
	}
	hi := max(floorRepair, ceiling)
	for r := floorRepair; r < hi; r++ {
		if residual(groupSize, r, loss) <= residualTarget &&
			(depth == 1 || residualBurst(r, depth, loss, burst) <= residualTarget) {
			return r, depth
		}
	}
	return hi, depth
}
