package wan

import (
	"math"
	"testing"
	"time"
)

func TestGEFromMean(t *testing.T) {
	g, err := GEFromMean(0.01, 4)
	if err != nil {
		t.Fatal(err)
	}
	if g.R != 0.25 || g.LossBad != 1 || g.LossGood != 0 {
		t.Fatalf("%+v", g)
	}
	if math.Abs(g.MeanLoss()-0.01) > 1e-12 || g.MeanBurst() != 4 {
		t.Fatalf("mean loss %v, burst %v", g.MeanLoss(), g.MeanBurst())
	}
	if g, err := GEFromMean(0, 4); err != nil || g.P != 0 || g.MeanLoss() != 0 {
		t.Fatalf("no loss: %+v %v", g, err)
	}
	for _, c := range []struct{ mean, burst float64 }{{-0.1, 4}, {1, 4}, {0.01, 0.5}, {0.9, 1.05}, {math.NaN(), 4}} {
		if _, err := GEFromMean(c.mean, c.burst); err == nil {
			t.Errorf("GEFromMean(%v, %v) accepted", c.mean, c.burst)
		}
	}
}

// gePattern runs n packets through a shaper with the given model and
// returns the loss pattern.
func gePattern(g GilbertElliott, seed uint64, n int) []bool {
	s := NewShaper(Link{Delay: time.Millisecond, GE: &g}, seed)
	out := make([]bool, n)
	for i := range out {
		_, v := s.Admit(t0.Add(time.Duration(i)*time.Microsecond), 100)
		out[i] = v == DropLoss
	}
	return out
}

func TestGEDeterministicPerSeed(t *testing.T) {
	g, _ := GEFromMean(0.02, 3)
	a, b, c := gePattern(g, 7, 50000), gePattern(g, 7, 50000), gePattern(g, 8, 50000)
	same := true
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("same seed, different loss at packet %d", i)
		}
		same = same && a[i] == c[i]
	}
	if same {
		t.Fatal("different seeds gave the same loss pattern")
	}
}

// The long-run loss rate and the mean burst length match the model's,
// within five standard deviations (for a two-state chain the variance of
// the loss count is inflated by (1+λ)/(1−λ), λ = 1−P−R, over the
// Bernoulli one).
func TestGEMeanLossAndBurst(t *testing.T) {
	const n = 1_000_000
	for _, c := range []struct{ mean, burst float64 }{{0.01, 4}, {0.03, 2}, {0.01, 1}} {
		g, err := GEFromMean(c.mean, c.burst)
		if err != nil {
			t.Fatal(err)
		}
		pat := gePattern(g, 1, n)
		lost, bursts := 0, 0
		for i, l := range pat {
			if l {
				lost++
				if i == 0 || !pat[i-1] {
					bursts++
				}
			}
		}
		lambda := 1 - g.P - g.R
		sd := math.Sqrt(float64(n) * c.mean * (1 - c.mean) * (1 + lambda) / (1 - lambda))
		if d := math.Abs(float64(lost) - c.mean*n); d > 5*sd {
			t.Errorf("mean %v burst %v: lost %d of %d, want %.0f ± %.0f", c.mean, c.burst, lost, n, c.mean*n, 5*sd)
		}
		// Bursts are geometric with mean 1/R, variance (1−R)/R².
		meanBurst := float64(lost) / float64(bursts)
		bsd := math.Sqrt((1 - g.R) / (g.R * g.R) / float64(bursts))
		if math.Abs(meanBurst-c.burst) > 5*bsd+1e-9 {
			t.Errorf("mean %v burst %v: mean burst %.3f over %d bursts, want %v ± %.3f", c.mean, c.burst, meanBurst, bursts, c.burst, 5*bsd)
		}
	}
}

// The bursty model really is bursty: at the same mean rate, losses are
// followed by losses far more often than with independent losses.
func TestGEBurstierThanBernoulli(t *testing.T) {
	const n = 200_000
	g, _ := GEFromMean(0.01, 4)
	ge := gePattern(g, 3, n)
	s := NewShaper(Link{Delay: time.Millisecond, Loss: 0.01}, 3)
	be := make([]bool, n)
	for i := range be {
		_, v := s.Admit(t0.Add(time.Duration(i)*time.Microsecond), 100)
		be[i] = v == DropLoss
	}
	follow := func(p []bool) float64 { // P(loss | previous lost)
		var a, b int
		for i := 1; i < len(p); i++ {
			if p[i-1] {
				a++
				if p[i] {
					b++
				}
			}
		}
		return float64(b) / float64(a)
	}
	if fg, fb := follow(ge), follow(be); fg < 0.6 || fb > 0.05 {
		t.Fatalf("P(loss after a loss): Gilbert–Elliott %.3f (want ≈ 0.75), Bernoulli %.3f (want ≈ 0.01)", fg, fb)
	}
}
