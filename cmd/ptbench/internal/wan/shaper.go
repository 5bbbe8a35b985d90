// Package wan emulates a wide-area link in user space (the kernel here has
// no netem): two network namespaces, one TUN device in each, and a
// forwarder that reads every IP packet from one TUN and writes it to the
// other after shaping it. Working on IP packets, it treats TCP and QUIC
// peers alike: a lost packet is lost for both.
package wan

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// Link describes one direction of the emulated link.
type Link struct {
	Delay  time.Duration // one-way propagation delay
	Jitter time.Duration // each packet gets Delay plus uniform [-Jitter, +Jitter]
	Loss   float64       // probability, 0..1, that a packet is dropped (Bernoulli, independent); ignored when GE is set
	// GE, when set, replaces the Bernoulli loss by a Gilbert–Elliott
	// two-state model: losses come in bursts.
	GE         *GilbertElliott
	RateBps    int64 // bottleneck rate in bits per second; 0 = unlimited
	QueueBytes int   // tail-drop limit of the bottleneck queue; 0 = one BDP (rate × 2 × Delay), at least 64 KiB
}

// GilbertElliott is a two-state Markov loss model. Before each packet the
// state moves (good → bad with probability P, bad → good with probability
// R); the packet is then lost with the loss probability of the state it is
// in. In the long run the link is bad a share P/(P+R) of the packets, and a
// stay in the bad state lasts 1/R packets on average.
type GilbertElliott struct {
	P        float64 // P(good → bad) per packet
	R        float64 // P(bad → good) per packet
	LossGood float64 // loss probability in the good state
	LossBad  float64 // loss probability in the bad state
}

// GEFromMean returns the usual simplified model (loss 1 in the bad state, 0
// in the good one: every packet of a bad spell is lost) with a long-run
// loss rate of mean and bursts of burst packets on average: R = 1/burst
// and, from mean = P/(P+R), P = mean·R/(1−mean).
func GEFromMean(mean, burst float64) (GilbertElliott, error) {
	if !(mean >= 0 && mean < 1) {
		return GilbertElliott{}, fmt.Errorf("mean loss %v outside [0, 1)", mean)
	}
	if !(burst >= 1) {
		return GilbertElliott{}, fmt.Errorf("mean burst length %v below 1 packet", burst)
	}
	r := 1 / burst
	p := mean * r / (1 - mean)
	if p > 1 {
		return GilbertElliott{}, fmt.Errorf("mean loss %v with bursts of %v packets needs P(good→bad) = %.3f > 1", mean, burst, p)
	}
	return GilbertElliott{P: p, R: r, LossGood: 0, LossBad: 1}, nil
}

// MeanLoss is the long-run loss rate.
func (g GilbertElliott) MeanLoss() float64 {
	if g.P+g.R == 0 {
		return g.LossGood
	}
	bad := g.P / (g.P + g.R)
	return bad*g.LossBad + (1-bad)*g.LossGood
}

// MeanBurst is the mean length of a stay in the bad state, in packets
// (the mean loss burst when LossBad is 1 and LossGood 0).
func (g GilbertElliott) MeanBurst() float64 {
	if g.R == 0 {
		return 0
	}
	return 1 / g.R
}

func (g GilbertElliott) String() string {
	return fmt.Sprintf("Gilbert–Elliott p=%.6g r=%.6g, loss %g in bad and %g in good: mean loss %.4g, mean bad spell %.3g packets",
		g.P, g.R, g.LossBad, g.LossGood, g.MeanLoss(), g.MeanBurst())
}

// Verdict is what the shaper decided about a packet.
type Verdict int

const (
	Forward   Verdict = iota
	DropLoss          // random loss
	DropQueue         // bottleneck queue full
)

// Shaper decides, for each packet of one direction, whether it is lost and
// when it leaves: a random-loss stage (Bernoulli or Gilbert–Elliott), then a FIFO bottleneck of RateBps
// with a tail-drop queue, then the propagation delay with jitter. Packets
// never overtake each other (a jittered packet that would leave before its
// predecessor leaves with it), so jitter does not reorder, unlike netem's.
// The random stream is seeded, so a run is reproducible packet for packet.
// Shaper is not safe for concurrent use: one per direction, one caller.
type Shaper struct {
	l           Link
	rng         *rand.Rand
	busyUntil   time.Time // when the bottleneck finishes serialising what it holds
	lastRelease time.Time
	bad         bool // Gilbert–Elliott state (starts good)

	Forwarded, Lost, QueueDrops uint64
}

// NewShaper returns a shaper for l with a deterministic random stream.
func NewShaper(l Link, seed uint64) *Shaper {
	if l.QueueBytes <= 0 {
		q := 64 << 10
		if l.RateBps > 0 {
			if bdp := int(l.RateBps / 8 * int64(2*l.Delay) / int64(time.Second)); bdp > q {
				q = bdp
			}
		}
		l.QueueBytes = q
	}
	return &Shaper{l: l, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// Link returns the link with defaults filled in.
func (s *Shaper) Link() Link { return s.l }

// Admit takes a packet of size bytes arriving at now and returns its
// verdict and, when forwarded, the time it must be delivered.
func (s *Shaper) Admit(now time.Time, size int) (time.Time, Verdict) {
	if s.lose() {
		s.Lost++
		return time.Time{}, DropLoss
	}
	depart := now
	if s.l.RateBps > 0 {
		if s.busyUntil.Before(now) {
			s.busyUntil = now
		}
		backlog := int64(s.busyUntil.Sub(now)) * s.l.RateBps / 8 / int64(time.Second)
		if backlog+int64(size) > int64(s.l.QueueBytes) {
			s.QueueDrops++
			return time.Time{}, DropQueue
		}
		s.busyUntil = s.busyUntil.Add(time.Duration(int64(size) * 8 * int64(time.Second) / s.l.RateBps))
		depart = s.busyUntil
	}
	d := s.l.Delay
	if s.l.Jitter > 0 {
		d += time.Duration(s.rng.Int64N(int64(2*s.l.Jitter)+1)) - s.l.Jitter
		if d < 0 {
			d = 0
		}
	}
	release := depart.Add(d)
	if release.Before(s.lastRelease) {
		release = s.lastRelease
	}
	s.lastRelease = release
	s.Forwarded++
	return release, Forward
}

// lose draws the random loss of one packet.
func (s *Shaper) lose() bool {
	g := s.l.GE
	if g == nil {
		return s.l.Loss > 0 && s.rng.Float64() < s.l.Loss
	}
	if s.bad {
		s.bad = s.rng.Float64() >= g.R
	} else {
		s.bad = s.rng.Float64() < g.P
	}
	pl := g.LossGood
	if s.bad {
		pl = g.LossBad
	}
	switch {
	case pl <= 0:
		return false
	case pl >= 1:
		return true
	}
	return s.rng.Float64() < pl
}
