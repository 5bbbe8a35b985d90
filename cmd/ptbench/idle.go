package main

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/ptproxy/ptproxy/cmd/ptbench/internal/loadgen"
	"github.com/ptproxy/ptproxy/cmd/ptbench/internal/origin"
	"github.com/ptproxy/ptproxy/cmd/ptbench/internal/pairs"
	"github.com/ptproxy/ptproxy/cmd/ptbench/internal/procstat"
	"github.com/ptproxy/ptproxy/cmd/ptbench/internal/report"
)

// idleOpts shape the loopback memory scenario "idle".
type idleOpts struct {
	conns    int           // idle keep-alive callers held open
	inflight int           // concurrent slow requests while sampling
	delay    time.Duration // the origin's delay of each slow request
	dur      time.Duration // time bound of the measured phase
	warm     time.Duration // unmeasured warm-up of the slow load
	every    time.Duration // RSS sampling interval
}

// The target holds for these numbers.
const targetIdleConns, targetInflight = 1000, 100

func (o idleOpts) request() loadgen.Request {
	return loadgen.Request{Method: "GET", Path: fmt.Sprintf("/slow?ms=%d", o.delay.Milliseconds())}
}

// maxRequests bounds the measured phase by count: ten rounds of the
// in-flight load.
func (o idleOpts) maxRequests() int { return 10 * o.inflight }

func idleScenario(o idleOpts) *report.Scenario {
	req := o.request()
	return &report.Scenario{Name: "idle",
		Title: fmt.Sprintf("Memory of each side with %d idle callers and %d requests in flight", o.conns, o.inflight),
		Method: fmt.Sprintf("Each pair is restarted first, so that memory left by the scenarios before does not count. "+
			"Then %d HTTP/1.1 keep-alive connections are opened to the client side (32 at a time), each sends one GET /small "+
			"(so that it is established through the pair) and then stays idle; then %d workers, each on its own connection, "+
			"send %s %s (the origin answers 100 B after %v) back to back, so that %d requests are in flight, "+
			"bounded by %d requests and %v after a %v warm-up. "+
			"During the measured phase the current resident set (VmRSS, not the peak) of each side's processes "+
			"(nginx: master and worker) is sampled every %v; the largest sample of each side is reported. "+
			"At the end, the idle connections that are still open (no end of stream, no bytes) are counted. "+
			"Direct has no proxy process (only the origin, charged to no pair) and is skipped. "+
			"Every process the harness starts inherits its RLIMIT_NOFILE (%d here).",
			o.conns, o.inflight, req.Method, req.Path, o.delay, o.inflight, o.maxRequests(), o.dur, o.warm, o.every, nofile),
		Metrics: []report.Metric{
			{Key: "rss_client_mib", Label: "client side RSS", Unit: "MiB", LowerBetter: true, Plot: true},
			{Key: "rss_server_mib", Label: "server side RSS", Unit: "MiB", LowerBetter: true, Plot: true},
			{Key: "idle_open", Label: "idle callers still open", Unit: "count", NoRatio: true},
			{Key: "inflight", Label: "mean requests in flight", Unit: "count", NoRatio: true},
			{Key: "p50", Label: "slow request p50", Unit: "ms", LowerBetter: true},
			{Key: "errors", Label: "errors", Unit: "count", LowerBetter: true, NoRatio: true},
		}}
}

// rssSampler samples the current RSS of each side every interval between
// start and stop and keeps each side's largest sample.
type rssSampler struct {
	sides    [][]int // the processes of each side
	interval time.Duration

	mu      sync.Mutex
	max     []int64
	samples int
	stopc   chan struct{}
	done    chan struct{}
}

func newRSSSampler(interval time.Duration, sides ...[]int) *rssSampler {
	return &rssSampler{sides: sides, interval: interval, max: make([]int64, len(sides))}
}

func (s *rssSampler) sample() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, pids := range s.sides {
		s.max[i] = max(s.max[i], procstat.RSS(pids))
	}
	s.samples++
}

// start begins sampling; the first sample is taken one interval later,
// once the load is in flight.
func (s *rssSampler) start() {
	s.stopc, s.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(s.done)
		t := time.NewTicker(s.interval)
		defer t.Stop()
		for {
			select {
			case <-s.stopc:
				return
			case <-t.C:
				s.sample()
			}
		}
	}()
}

// stop ends sampling (taking one sample if none was taken) and returns
// each side's largest sample in bytes and the number of samples.
func (s *rssSampler) stop() ([]int64, int) {
	if s.stopc != nil {
		close(s.stopc)
		<-s.done
		s.stopc = nil
	}
	s.mu.Lock()
	n := s.samples
	s.mu.Unlock()
	if n == 0 {
		s.sample()
		n = 1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int64(nil), s.max...), n
}

// measureIdle restarts p, holds o.conns idle callers on it and samples
// each side's RSS while o.inflight slow requests are in flight.
func measureIdle(ctx context.Context, b *bench, p *pairs.Pair, o idleOpts) report.Run {
	run := report.Run{Pair: p.Name}
	dial := tcpDialer(p.Addr)
	p.Stop()
	if err := startPair(ctx, p, dial, 20*time.Second); err != nil {
		run.Err = "restart: " + firstLine(err)
		return run
	}
	idle, err := loadgen.OpenIdle(ctx, dial, loadgen.Request{Method: "GET", Path: "/small"}, o.conns, 32, 10*time.Second, origin.SmallSize)
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	if err != nil {
		run.Err = firstLine(err)
		return run
	}
	sampler := newRSSSampler(o.every, procstat.Tree(p.Client.Pid()), procstat.Tree(p.Server.Pid()))
	var rss []int64
	var samples int
	r, err := loadgen.Run(ctx, loadgen.Spec{
		Dial: dial, Request: o.request(), Concurrency: o.inflight,
		MaxRequests: o.maxRequests(), Duration: o.dur, Warmup: o.warm, ExpectBytes: origin.SmallSize,
		Begin: sampler.start, End: func() { rss, samples = sampler.stop() },
	})
	if rss == nil { // the measured phase never began or ended
		rss, samples = sampler.stop()
	}
	if err != nil {
		run.Err = err.Error()
		return run
	}
	open := loadgen.CountOpen(idle, 200*time.Millisecond)
	const mib = 1 << 20
	run.Values = map[string]float64{
		"rss_client_mib": float64(rss[0]) / mib,
		"rss_server_mib": float64(rss[1]) / mib,
		"idle_open":      float64(open),
		"p50":            float64(r.Latency.Percentile(50)) / float64(time.Millisecond),
		"errors":         float64(r.Errors),
		// Little's law: requests per second × mean time in the system.
		"inflight": r.RPS() * r.Latency.Mean().Seconds(),
	}
	if samples < 3 {
		run.Err = fmt.Sprintf("only %d RSS sample(s) during the measured phase", samples)
	}
	if open < len(idle) {
		run.Err = joinErr(run.Err, fmt.Sprintf("%d of %d idle callers were closed by the pair", len(idle)-open, len(idle)))
	}
	if r.Errors > 0 {
		run.Err = joinErr(run.Err, fmt.Sprintf("%d errors, first: %s", r.Errors, r.FirstErr))
	}
	return run
}

func joinErr(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// idleTarget checks ptproxy's memory target against the medians of s.
func idleTarget(s *report.Scenario, o idleOpts) report.Target {
	const limitMB = 50
	limit := limitMB * 1e6 / (1 << 20) // MiB
	c, sv := s.Get("ptproxy", "rss_client_mib"), s.Get("ptproxy", "rss_server_mib")
	worst := math.Max(c, sv) // NaN when either is missing
	t := report.Target{
		Goal: fmt.Sprintf("RSS per side ≤ %d MB (%.1f MiB) with %d idle callers and %d in flight", limitMB, limit, targetIdleConns, targetInflight),
		Measured: fmt.Sprintf("ptproxy client %s MiB, server %s MiB: largest side %s MiB (nginx %s / %s MiB)",
			report.Fmt(c), report.Fmt(sv), report.Fmt(worst), report.Fmt(s.Get("nginx", "rss_client_mib")), report.Fmt(s.Get("nginx", "rss_server_mib"))),
	}
	switch {
	case o.conns < targetIdleConns || o.inflight < targetInflight:
		t.Measured += fmt.Sprintf(" — measured with only %d idle and %d in flight", o.conns, o.inflight)
		t.Verdict = "n/a"
	case math.IsNaN(worst):
		t.Verdict = "n/a"
	case worst <= limit:
		t.Verdict = "met"
	default:
		t.Verdict = "missed"
	}
	return t
}
