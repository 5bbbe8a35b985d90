// Package stats holds the latency recorder and the summaries the benchmark
// reports: percentiles over every sample (no bucketing error) and medians
// across repetitions.
package stats

import (
	"math"
	"slices"
	"time"
)

// Recorder keeps every latency sample. A run is bounded in count, so the
// samples fit in memory (8 bytes each) and percentiles are exact.
type Recorder struct {
	samples []time.Duration
	sorted  bool
}

// NewRecorder preallocates room for n samples.
func NewRecorder(n int) *Recorder {
	return &Recorder{samples: make([]time.Duration, 0, n)}
}

// Add records one sample.
func (r *Recorder) Add(d time.Duration) {
	r.samples = append(r.samples, d)
	r.sorted = false
}

// Merge appends every sample of o.
func (r *Recorder) Merge(o *Recorder) {
	r.samples = append(r.samples, o.samples...)
	r.sorted = false
}

// Count is the number of samples.
func (r *Recorder) Count() int { return len(r.samples) }

func (r *Recorder) sort() {
	if !r.sorted {
		slices.Sort(r.samples)
		r.sorted = true
	}
}

// Percentile returns the sample at quantile p (0..100) by the nearest-rank
// method: the smallest sample such that at least p% of the samples are less
// than or equal to it. It returns 0 without samples.
func (r *Recorder) Percentile(p float64) time.Duration {
	n := len(r.samples)
	if n == 0 {
		return 0
	}
	r.sort()
	if p <= 0 {
		return r.samples[0]
	}
	if p >= 100 {
		return r.samples[n-1]
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	if rank < 1 {
		rank = 1
	}
	return r.samples[rank-1]
}

// Max is the largest sample.
func (r *Recorder) Max() time.Duration { return r.Percentile(100) }

// Mean is the arithmetic mean of the samples.
func (r *Recorder) Mean() time.Duration {
	if len(r.samples) == 0 {
		return 0
	}
	var s float64
	for _, d := range r.samples {
		s += float64(d)
	}
	return time.Duration(s / float64(len(r.samples)))
}

// Summary is the usual set of percentiles, in microseconds for JSON.
type Summary struct {
	Count int     `json:"count"`
	P50us float64 `json:"p50_us"`
	P90us float64 `json:"p90_us"`
	P99us float64 `json:"p99_us"`
	MaxUs float64 `json:"max_us"`
}

// Summarize computes a Summary.
func (r *Recorder) Summarize() Summary {
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	return Summary{
		Count: r.Count(),
		P50us: us(r.Percentile(50)),
		P90us: us(r.Percentile(90)),
		P99us: us(r.Percentile(99)),
		MaxUs: us(r.Max()),
	}
}

// Median returns the median of xs (the mean of the two middle values for an
// even count), ignoring NaNs; NaN when nothing is left.
func Median(xs []float64) float64 {
	v := make([]float64, 0, len(xs))
	for _, x := range xs {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return math.NaN()
	}
	slices.Sort(v)
	m := len(v) / 2
	if len(v)%2 == 1 {
		return v[m]
	}
	return (v[m-1] + v[m]) / 2
}

// Ratio returns a/b, or NaN when b is zero or either is NaN.
func Ratio(a, b float64) float64 {
	if b == 0 || math.IsNaN(a) || math.IsNaN(b) {
		return math.NaN()
	}
	return a / b
}
