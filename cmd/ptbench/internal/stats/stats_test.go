package stats

import (
	"math"
	"testing"
	"time"
)

func TestPercentileNearestRank(t *testing.T) {
	r := NewRecorder(0)
	for i := 100; i >= 1; i-- { // added out of order on purpose
		r.Add(time.Duration(i) * time.Millisecond)
	}
	cases := []struct {
		p    float64
		want time.Duration
	}{
		{0, 1 * time.Millisecond},
		{1, 1 * time.Millisecond},
		{50, 50 * time.Millisecond},
		{90, 90 * time.Millisecond},
		{99, 99 * time.Millisecond},
		{99.5, 100 * time.Millisecond},
		{100, 100 * time.Millisecond},
	}
	for _, c := range cases {
		if got := r.Percentile(c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	if r.Max() != 100*time.Millisecond {
		t.Errorf("max = %v", r.Max())
	}
	if r.Mean() != 50500*time.Microsecond {
		t.Errorf("mean = %v", r.Mean())
	}
}

func TestPercentileSmallAndEmpty(t *testing.T) {
	r := NewRecorder(0)
	if r.Percentile(50) != 0 {
		t.Fatal("empty recorder must give 0")
	}
	r.Add(7)
	for _, p := range []float64{0, 50, 99, 100} {
		if r.Percentile(p) != 7 {
			t.Fatalf("p%v of one sample", p)
		}
	}
	// Three samples: p50 is the 2nd, p99 the 3rd (nearest rank).
	r.Add(3)
	r.Add(5)
	if r.Percentile(50) != 5 || r.Percentile(99) != 7 || r.Percentile(34) != 5 || r.Percentile(33) != 3 {
		t.Fatalf("three samples: p50=%v p99=%v", r.Percentile(50), r.Percentile(99))
	}
	o := NewRecorder(0)
	o.Add(1)
	r.Merge(o)
	if r.Count() != 4 || r.Percentile(0) != 1 {
		t.Fatalf("merge: count %d min %v", r.Count(), r.Percentile(0))
	}
	s := r.Summarize()
	if s.Count != 4 || s.MaxUs != 0.007 {
		t.Fatalf("summary %+v", s)
	}
}

func TestMedianAndRatio(t *testing.T) {
	if Median([]float64{3, 1, 2}) != 2 {
		t.Error("odd median")
	}
	if Median([]float64{4, 1, 3, 2}) != 2.5 {
		t.Error("even median")
	}
	if Median([]float64{math.NaN(), 5}) != 5 {
		t.Error("NaN must be ignored")
	}
	if !math.IsNaN(Median(nil)) {
		t.Error("empty median must be NaN")
	}
	if Ratio(3, 2) != 1.5 || !math.IsNaN(Ratio(1, 0)) || !math.IsNaN(Ratio(math.NaN(), 1)) {
		t.Error("ratio")
	}
}
