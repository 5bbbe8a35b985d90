// Package wan emulates a wide-area link in user space (the kernel here has
// no netem): two network namespaces, one TUN device in each, and a
// forwarder that reads every IP packet from one TUN and writes it to the
// other after shaping it. Working on IP packets, it treats TCP and QUIC
// peers alike: a lost packet is lost for both.
package wan

import (
	"math/rand/v2"
	"time"
)

// Link describes one direction of the emulated link.
type Link struct {
	Delay      time.Duration // one-way propagation delay
	Jitter     time.Duration // each packet gets Delay plus uniform [-Jitter, +Jitter]
	Loss       float64       // probability, 0..1, that a packet is dropped (Bernoulli, independent)
	RateBps    int64         // bottleneck rate in bits per second; 0 = unlimited
	QueueBytes int           // tail-drop limit of the bottleneck queue; 0 = one BDP (rate × 2 × Delay), at least 64 KiB
}

// Verdict is what the shaper decided about a packet.
type Verdict int

const (
	Forward   Verdict = iota
	DropLoss          // random loss
	DropQueue         // bottleneck queue full
)

// Shaper decides, for each packet of one direction, whether it is lost and
// when it leaves: a random-loss stage, then a FIFO bottleneck of RateBps
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
	if s.l.Loss > 0 && s.rng.Float64() < s.l.Loss {
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
