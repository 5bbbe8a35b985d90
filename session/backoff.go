package session

import (
	"math/rand/v2"
	"time"
)

// backoff computes the wait before the next connection attempt.
//
// Policy: after an established session ends the client retries at once (the
// server usually closed cleanly because it restarts); this is the caller's
// job (it calls reset and does not wait). After a failed attempt the wait
// starts at min and doubles up to max (connect_interval, the ceiling), each
// value scaled by a jitter factor in [1-jitterFrac, 1+jitterFrac] and never
// above max. The original slept a fixed connect_interval with no jitter.
type backoff struct {
	min, max time.Duration
	// jitter returns a value in [-1, 1]; injectable for tests.
	jitter func() float64
	n      int // failed attempts since reset
}

const jitterFrac = 0.10

func newBackoff(ceiling time.Duration) *backoff {
	if ceiling <= 0 {
		ceiling = DefaultConnectInterval
	}
	minWait := ceiling / 16
	if minWait <= 0 {
		minWait = ceiling
	}
	return &backoff{min: minWait, max: ceiling, jitter: func() float64 { return rand.Float64()*2 - 1 }}
}

// next returns the wait before the next attempt after a failure.
func (b *backoff) next() time.Duration {
	d := b.min
	for i := 0; i < b.n && d < b.max; i++ {
		d *= 2
	}
	if d > b.max {
		d = b.max
	}
	b.n++
	d = time.Duration(float64(d) * (1 + jitterFrac*b.jitter()))
	if d > b.max {
		d = b.max
	}
	if d < 0 {
		d = 0
	}
	return d
}

// reset is called after an established session.
func (b *backoff) reset() { b.n = 0 }

// clock abstracts timers for the client loop (tests inject a fake).
type clock interface {
	// After returns a channel that receives after d, and a stop function.
	After(d time.Duration) (<-chan time.Time, func())
}

type realClock struct{}

func (realClock) After(d time.Duration) (<-chan time.Time, func()) {
	t := time.NewTimer(d)
	return t.C, func() { t.Stop() }
}
