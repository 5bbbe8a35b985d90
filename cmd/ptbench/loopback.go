package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"math"
	"os"
	"strings"
	"time"

	"github.com/ptproxy/ptproxy/cmd/ptbench/internal/loadgen"
	"github.com/ptproxy/ptproxy/cmd/ptbench/internal/origin"
	"github.com/ptproxy/ptproxy/cmd/ptbench/internal/pairs"
	"github.com/ptproxy/ptproxy/cmd/ptbench/internal/procstat"
	"github.com/ptproxy/ptproxy/cmd/ptbench/internal/report"
)

// loadCase is one load shape.
type loadCase struct {
	name, title string
	req         loadgen.Request
	conc        int
	max         int
	dur         time.Duration
	expect      int64
	transfer    bool // report MiB/s
	ms          bool // latencies in ms (µs otherwise)
}

func latencyMetrics(unit string, plot bool) []report.Metric {
	return []report.Metric{
		{Key: "p50", Label: "p50", Unit: unit, LowerBetter: true, Plot: plot},
		{Key: "p90", Label: "p90", Unit: unit, LowerBetter: true},
		{Key: "p99", Label: "p99", Unit: unit, LowerBetter: true, Plot: plot},
		{Key: "max", Label: "max", Unit: unit, LowerBetter: true},
	}
}

func (lc loadCase) metrics() []report.Metric {
	ms := []report.Metric{{Key: "rps", Label: "requests/s", Unit: "req/s", Plot: !lc.transfer}}
	if lc.transfer {
		ms = append(ms, report.Metric{Key: "mibps", Label: "throughput", Unit: "MiB/s", Plot: true})
	}
	unit := "µs"
	if lc.ms {
		unit = "ms"
	}
	ms = append(ms, latencyMetrics(unit, lc.conc == 1)...)
	ms = append(ms,
		report.Metric{Key: "cpu_us", Label: "pair CPU per request", Unit: "µs", LowerBetter: true, Plot: true},
		report.Metric{Key: "errors", Label: "errors", Unit: "count", LowerBetter: true, NoRatio: true},
		report.Metric{Key: "foreign", Label: "foreign load", Unit: "CPUs", LowerBetter: true, NoRatio: true},
	)
	return ms
}

func runLoopback(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("ptbench loopback", flag.ExitOnError)
	var c common
	c.register(fs, strings.Join(pairs.Default, ","), 3)
	dur := fs.Duration("duration", 5*time.Second, "time bound of each measured run at concurrency 64 (others take 3/5 of it)")
	warm := fs.Duration("warmup", time.Second, "unmeasured warm-up before each run")
	scen := fs.String("scenarios", "c1,c64,down,up,chunked,idle", "scenarios to run (idle: RSS of each side with idle callers and requests in flight)")
	var iopts idleOpts
	fs.IntVar(&iopts.conns, "idle-conns", targetIdleConns, "idle scenario: idle keep-alive callers held open")
	fs.IntVar(&iopts.inflight, "idle-inflight", targetInflight, "idle scenario: requests kept in flight while RSS is sampled")
	fs.DurationVar(&iopts.delay, "idle-delay", 200*time.Millisecond, "idle scenario: the origin's delay of each in-flight request (GET /slow?ms=N)")
	fs.Parse(args)
	started := time.Now()
	b := &bench{c: c}
	defer b.close()
	var notes []string
	names, err := b.pairNames()
	if err != nil {
		return err
	}
	names, err = b.prepare(names, &notes)
	if err != nil {
		return err
	}
	short := *dur * 3 / 5
	iopts.dur, iopts.warm, iopts.every = short, *warm, 100*time.Millisecond
	all := []loadCase{
		{name: "c1", title: "Latency at concurrency 1 (GET 100 B)", req: loadgen.Request{Method: "GET", Path: "/small"}, conc: 1, max: 200000, dur: short, expect: origin.SmallSize},
		{name: "c64", title: "Throughput at concurrency 64 (GET 100 B)", req: loadgen.Request{Method: "GET", Path: "/small"}, conc: 64, max: 2000000, dur: *dur, expect: origin.SmallSize},
		{name: "down", ms: true, title: "1 MiB download at concurrency 8 (GET /1m)", req: loadgen.Request{Method: "GET", Path: "/1m"}, conc: 8, max: 100000, dur: short, expect: origin.LargeSize, transfer: true},
		{name: "up", ms: true, title: "1 MiB upload at concurrency 8 (POST /echo?discard)", req: loadgen.Request{Method: "POST", Path: "/echo?discard", Body: make([]byte, origin.LargeSize)}, conc: 8, max: 100000, dur: short, expect: 8, transfer: true},
		{name: "chunked", ms: true, title: "Chunked 64 × 4 KiB at concurrency 8 (GET /chunked)", req: loadgen.Request{Method: "GET", Path: "/chunked"}, conc: 8, max: 200000, dur: short, expect: origin.ChunkedSize, transfer: true},
	}
	var cases []loadCase
	for _, lc := range all {
		if strings.Contains(","+*scen+",", ","+lc.name+",") {
			cases = append(cases, lc)
		}
	}

	if err := b.startOrigin("", fmt.Sprintf("127.0.0.1:%d", b.env.OriginPort), tcpDialer(fmt.Sprintf("127.0.0.1:%d", b.env.OriginPort))); err != nil {
		return err
	}
	res := &report.Results{Mode: "loopback", Title: "ptproxy benchmarks: loopback", Started: started,
		Invoked: strings.TrimSpace("ptbench loopback " + strings.Join(args, " ")), Reps: c.reps, Commands: map[string]string{}, Notes: notes}
	res.Commands["origin"] = b.origin.CommandLine()
	running, err := startPairs(ctx, &b.env, names, tcpDialer, 20*time.Second, res)
	b.pairs = append(b.pairs, running...)
	if err != nil {
		return err
	}

	for _, lc := range cases {
		sc := &report.Scenario{Name: lc.name, Title: lc.title, Metrics: lc.metrics(),
			Method: fmt.Sprintf("%s %s, %d persistent HTTP/1.1 connection(s), bounded by %d requests and %v after a %v warm-up; CPU is utime+stime of the pair's processes (all sides, workers included) divided by the requests completed; foreign load is machine CPU not used by the pair, the origin or the harness.",
				lc.req.Method, lc.req.Path, lc.conc, lc.max, lc.dur, *warm)}
		res.Scenarios = append(res.Scenarios, sc)
		for rep := 1; rep <= c.reps; rep++ {
			for _, p := range b.pairs {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				r := measureLoad(ctx, b, p, lc, *warm)
				r.Rep = rep
				sc.Add(r)
				log.Printf("%-8s rep %d %-8s %s", lc.name, rep, p.Name, brief(r))
			}
		}
		sc.Finish()
	}
	if len(cases) > 0 {
		// Peak memory of each pair over the load cases (taken before the
		// idle scenario, which restarts the pairs).
		mem := &report.Scenario{Name: "rss", Title: "Peak memory", Method: "Sum of VmHWM (peak resident set) of the pair's processes at the end of the session, after every load above.",
			Metrics: []report.Metric{{Key: "rss_mib", Label: "peak RSS", Unit: "MiB", LowerBetter: true, Plot: true}}}
		for _, p := range b.pairs {
			if p.Server == nil {
				continue
			}
			mem.Add(report.Run{Pair: p.Name, Rep: 1, Values: map[string]float64{"rss_mib": float64(procstat.PeakRSS(p.Pids())) / (1 << 20)}})
		}
		mem.Finish()
		res.Scenarios = append(res.Scenarios, mem)
	}
	if strings.Contains(","+*scen+",", ",idle,") {
		sc := idleScenario(iopts)
		res.Scenarios = append(res.Scenarios, sc)
		for rep := 1; rep <= c.reps; rep++ {
			for _, p := range b.pairs {
				if p.Server == nil {
					continue
				}
				if ctx.Err() != nil {
					return ctx.Err()
				}
				r := measureIdle(ctx, b, p, iopts)
				r.Rep = rep
				sc.Add(r)
				log.Printf("idle     rep %d %-8s %s", rep, p.Name, brief(r))
			}
		}
		sc.Finish()
	}
	res.Host = b.hostInfo()
	res.Targets = loopbackTargets(res, iopts)
	res.Duration = time.Since(started).Round(time.Second).String()
	res.Notes = append(res.Notes,
		"All pairs run at once on the same 2 CPUs as the origin and the load generator; only the pair under measurement carries load, the others idle (ptproxy and Caddy send QUIC keep-alives).",
		"nginx and HAProxy run one worker (thread) per side, two in all for two CPUs; Go programs (ptproxy, Caddy, origin, load generator) use every CPU (GOMAXPROCS default).",
		"nginx streams (proxy_buffering off, proxy_request_buffering off) like the other pairs; keep-alive to the next hop on both sides of every pair.",
		"Other engineers' work shares this machine: the 'foreign load' column is the CPU (in CPUs) used by processes outside the benchmark during each run; runs with high foreign load are noisier.")
	res.Notes = append(res.Notes, b.experimentNotes(res.Pairs)...)
	if b.c.tag == "" {
		if err := copyConfigs(b, res.Pairs); err != nil {
			log.Printf("copying configs: %v", err)
		}
	}
	base := b.base("results-loopback")
	if err := res.Write(b.c.out, base); err != nil {
		return err
	}
	log.Printf("wrote %s/%s.md", b.c.out, base)
	return nil
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

func brief(r report.Run) string {
	if r.Err != "" && len(r.Values) == 0 {
		return "ERROR " + r.Err
	}
	var parts []string
	for _, k := range []string{"rps", "mibps", "p50", "p99", "cpu_us", "wire_mib", "rss_client_mib", "rss_server_mib", "idle_open", "inflight", "errors", "foreign", "first_ms", "start_to_200_ms", "recovery_ms", "transfer_ms"} {
		if v, ok := r.Values[k]; ok {
			parts = append(parts, k+"="+report.Fmt(v))
		}
	}
	if r.Err != "" {
		parts = append(parts, "err="+r.Err)
	}
	return strings.Join(parts, " ")
}

// measureLoad runs one load case against one pair.
func measureLoad(ctx context.Context, b *bench, p *pairs.Pair, lc loadCase, warm time.Duration) report.Run {
	return measureLoadDial(ctx, b, p, lc, warm, tcpDialer(p.Addr))
}

func measureLoadDial(ctx context.Context, b *bench, p *pairs.Pair, lc loadCase, warm time.Duration, dial loadgen.DialFunc) report.Run {
	r := measureLoadHooks(ctx, b, p, lc, warm, dial, nil, nil)
	delete(r.Values, "requests")
	return r
}

// measureLoadHooks is measureLoadDial with begin and end called right
// after the CPU meter's start and right after its end; its values also
// hold "requests", the requests completed.
func measureLoadHooks(ctx context.Context, b *bench, p *pairs.Pair, lc loadCase, warm time.Duration, dial loadgen.DialFunc, begin, end func()) report.Run {
	run := report.Run{Pair: p.Name}
	if err := p.CheckRunning(); err != nil {
		run.Err = firstLine(err)
		return run
	}
	m := &cpuMeter{pair: p.Pids, origin: b.origin.Pid()}
	r, err := loadgen.Run(ctx, loadgen.Spec{
		Dial: dial, Request: lc.req, Concurrency: lc.conc,
		MaxRequests: lc.max, Duration: lc.dur, Warmup: warm, ExpectBytes: lc.expect,
		Begin: func() {
			m.Begin()
			if begin != nil {
				begin()
			}
		},
		End: func() {
			m.End()
			if end != nil {
				end()
			}
		},
	})
	if err != nil {
		run.Err = err.Error()
		return run
	}
	scale := 1e-3 // µs
	if lc.ms {
		scale = 1e-6 // ms
	}
	l := r.Latency
	run.Values = map[string]float64{
		"rps":      r.RPS(),
		"p50":      float64(l.Percentile(50)) * scale,
		"p90":      float64(l.Percentile(90)) * scale,
		"p99":      float64(l.Percentile(99)) * scale,
		"max":      float64(l.Max()) * scale,
		"errors":   float64(r.Errors),
		"foreign":  m.Foreign(),
		"requests": float64(r.Requests),
	}
	if lc.transfer {
		var moved float64
		if lc.req.Body != nil {
			moved = float64(len(lc.req.Body)) * float64(r.Requests)
		} else {
			moved = float64(r.Bytes)
		}
		run.Values["mibps"] = moved / (1 << 20) / r.Elapsed.Seconds()
	}
	if r.Requests > 0 {
		run.Values["cpu_us"] = float64(m.Pair.Microseconds()) / float64(r.Requests)
	} else {
		run.Values["cpu_us"] = math.NaN()
	}
	if r.Errors > 0 {
		run.Err = fmt.Sprintf("%d errors, first: %s", r.Errors, r.FirstErr)
	}
	return run
}

func loopbackTargets(res *report.Results, iopts idleOpts) []report.Target {
	var ts []report.Target
	c64, c1 := res.Find("c64"), res.Find("c1")
	verdict := func(ok bool, have bool) string {
		if !have {
			return "n/a"
		}
		if ok {
			return "met"
		}
		return "missed"
	}
	if c64 != nil {
		pr, cr := c64.Get("ptproxy", "rps"), c64.Get("caddy", "rps")
		r := pr / cr
		ts = append(ts, report.Target{Goal: "c64 requests/s ≥ 1.5 × Caddy pair's",
			Measured: fmt.Sprintf("ptproxy %s req/s, Caddy %s req/s: %.2f×", report.Fmt(pr), report.Fmt(cr), r),
			Verdict:  verdict(r >= 1.5, !math.IsNaN(r))})
		pc, cc := c64.Get("ptproxy", "cpu_us"), c64.Get("caddy", "cpu_us")
		r = pc / cc
		ts = append(ts, report.Target{Goal: "c64 CPU per request ≤ 0.6 × Caddy pair's",
			Measured: fmt.Sprintf("ptproxy %s µs, Caddy %s µs: %.2f×", report.Fmt(pc), report.Fmt(cc), r),
			Verdict:  verdict(r <= 0.6, !math.IsNaN(r))})
		nr := c64.Get("nginx", "rps")
		r = pr / nr
		ts = append(ts, report.Target{Goal: "(aim) c64 requests/s = nginx pair's",
			Measured: fmt.Sprintf("ptproxy %s req/s, nginx %s req/s: %.2f×", report.Fmt(pr), report.Fmt(nr), r),
			Verdict:  verdict(r >= 1, !math.IsNaN(r))})
	}
	if c1 != nil {
		for _, q := range []string{"p50", "p99"} {
			pl, nl := c1.Get("ptproxy", q), c1.Get("nginx", q)
			r := pl / nl
			ts = append(ts, report.Target{Goal: "c1 latency " + q + " ≤ nginx pair's",
				Measured: fmt.Sprintf("ptproxy %s µs, nginx %s µs: %.2f×", report.Fmt(pl), report.Fmt(nl), r),
				Verdict:  verdict(r <= 1, !math.IsNaN(r))})
		}
	}
	if s := res.Find("idle"); s != nil {
		ts = append(ts, idleTarget(s, iopts))
	}
	return ts
}

// copyConfigs copies each pair's generated configuration into
// docs/benchmarks/configs/<pair>/, with the scratch folder's path replaced
// by $WORK, so that the exact configurations are part of the results.
func copyConfigs(b *bench, names []string) error {
	for _, n := range names {
		if n == pairs.Direct {
			continue
		}
		src := b.work + "/" + n
		ents, err := os.ReadDir(src)
		if err != nil {
			return err
		}
		dst := b.c.out + "/configs/" + n
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return err
		}
		for _, e := range ents {
			name := e.Name()
			if e.IsDir() || strings.HasSuffix(name, ".log") || strings.HasSuffix(name, ".pid") || strings.HasSuffix(name, ".pem") {
				continue
			}
			data, err := os.ReadFile(src + "/" + name)
			if err != nil {
				return err
			}
			data = []byte(strings.ReplaceAll(string(data), b.work, "$WORK"))
			if err := os.WriteFile(dst+"/"+name, data, 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}
