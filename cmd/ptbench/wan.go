package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"math"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ptproxy/ptproxy/cmd/ptbench/internal/loadgen"
	"github.com/ptproxy/ptproxy/cmd/ptbench/internal/origin"
	"github.com/ptproxy/ptproxy/cmd/ptbench/internal/pairs"
	"github.com/ptproxy/ptproxy/cmd/ptbench/internal/report"
	"github.com/ptproxy/ptproxy/cmd/ptbench/internal/wan"
)

// parsePercent reads "1%", "0.5%" or "0.01" as a probability.
func parsePercent(s string) (float64, error) {
	s = strings.TrimSpace(s)
	if v, ok := strings.CutSuffix(s, "%"); ok {
		f, err := strconv.ParseFloat(v, 64)
		return f / 100, err
	}
	return strconv.ParseFloat(s, 64)
}

// parseRate reads "100mbit", "1gbit", "500kbit", "0" (unlimited) as bit/s.
func parseRate(s string) (int64, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range []struct {
		suf string
		m   int64
	}{{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}, {"bit", 1}} {
		if v, ok := strings.CutSuffix(s, u.suf); ok {
			s, mult = v, u.m
			break
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 {
		return 0, fmt.Errorf("bad rate %q (e.g. 100mbit, 0 for unlimited)", s)
	}
	return int64(f * float64(mult)), nil
}

type wanOpts struct {
	rtt, jitter, settle, connectInterval time.Duration
	rate                                 int64
	rateStr                              string
	seed                                 uint64
	latRequests, transfers               int
	lossModel                            string  // "bernoulli" or "ge"
	geBurst                              float64 // mean loss burst (packets) of the Gilbert–Elliott model
}

// Loss models of --loss-model.
const (
	lossBernoulli = "bernoulli"
	lossGE        = "ge"
)

// burstLabel is the burst length as it appears in file names: 4, 2_5.
func burstLabel(b float64) string {
	return strings.ReplaceAll(strconv.FormatFloat(b, 'f', -1, 64), ".", "_")
}

// wanBase is the results file's base name (before the tag).
func wanBase(o wanOpts, lossName string) string {
	lossLabel := strings.TrimSuffix(strings.ReplaceAll(strings.TrimSpace(lossName), ".", "_"), "%")
	base := fmt.Sprintf("results-wan-%s-loss%s", o.rtt, lossLabel)
	if o.lossModel == lossGE {
		base += "-ge" + burstLabel(o.geBurst)
	}
	return base
}

// lossDescription names the loss of one session for titles and notes.
func lossDescription(o wanOpts, lossName string) string {
	if o.lossModel == lossGE {
		return fmt.Sprintf("%s (Gilbert–Elliott, mean burst %s packets)", lossName, strconv.FormatFloat(o.geBurst, 'f', -1, 64))
	}
	return lossName
}

// wanLink is one direction of the emulated link for loss rate loss.
func wanLink(o wanOpts, loss float64) (wan.Link, error) {
	link := wan.Link{Delay: o.rtt / 2, Jitter: o.jitter, Loss: loss, RateBps: o.rate}
	if o.lossModel == lossGE {
		g, err := wan.GEFromMean(loss, o.geBurst)
		if err != nil {
			return link, err
		}
		link.Loss, link.GE = 0, &g
	}
	return link, nil
}

func runWAN(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("ptbench wan", flag.ExitOnError)
	var c common
	c.register(fs, strings.Join(pairs.Default, ","), 3)
	var o wanOpts
	fs.DurationVar(&o.rtt, "rtt", 50*time.Millisecond, "round-trip time of the emulated link (half each way)")
	lossList := fs.String("loss", "0%,1%", "comma-separated packet loss rates, each direction, one session per value")
	fs.DurationVar(&o.jitter, "jitter", 0, "each packet's one-way delay varies uniformly by ± this (no reordering)")
	fs.StringVar(&o.rateStr, "rate", "100mbit", "bottleneck rate each way (0 = unlimited); queue = one BDP")
	seed := fs.Uint64("seed", 1, "seed of the loss and jitter random streams")
	fs.IntVar(&o.latRequests, "lat-requests", 200, "requests of the concurrency-1 latency run (bounded by 60 s too)")
	fs.IntVar(&o.transfers, "transfers", 5, "1 MiB transfers per repetition (GET, then POST)")
	fs.StringVar(&o.lossModel, "loss-model", lossBernoulli, "random loss: bernoulli (independent) or ge (Gilbert–Elliott bursts; --loss is then the mean rate)")
	fs.Float64Var(&o.geBurst, "ge-burst", 4, "mean loss burst in packets of --loss-model ge (r = 1/burst; p from the mean rate)")
	fs.DurationVar(&o.settle, "settle", time.Second, "idle time between both ends being up and the timed first request")
	fs.DurationVar(&o.connectInterval, "connect-interval", time.Second, "ptproxy system.connect_interval (the client's reconnect wait)")
	fs.Parse(args)
	o.seed = *seed
	var err error
	if o.rate, err = parseRate(o.rateStr); err != nil {
		return err
	}
	if o.lossModel != lossBernoulli && o.lossModel != lossGE {
		return fmt.Errorf("--loss-model must be %s or %s", lossBernoulli, lossGE)
	}
	var losses []float64
	var lossNames []string
	for _, l := range strings.Split(*lossList, ",") {
		v, err := parsePercent(l)
		if err != nil || v < 0 || v >= 1 {
			return fmt.Errorf("bad --loss value %q", l)
		}
		if _, err := wanLink(o, v); err != nil {
			return fmt.Errorf("--loss %s: %v", l, err)
		}
		losses = append(losses, v)
		lossNames = append(lossNames, strings.TrimSpace(l))
	}
	if syscall.Geteuid() != 0 {
		return fmt.Errorf("wan needs root (network namespaces, TUN devices)")
	}
	b := &bench{c: c}
	defer b.close()
	var notes []string
	names, err := b.pairNames()
	if err != nil {
		return err
	}
	if names, err = b.prepare(names, &notes); err != nil {
		return err
	}
	b.env.ConnectInterval = o.connectInterval
	for i, loss := range losses {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := wanSession(ctx, b, names, notes, o, loss, lossNames[i], args); err != nil {
			return err
		}
	}
	return nil
}

const nsA, nsB = "ptb-a", "ptb-b"

func wanSession(ctx context.Context, b *bench, names, notes []string, o wanOpts, loss float64, lossName string, args []string) error {
	started := time.Now()
	link, err := wanLink(o, loss)
	if err != nil {
		return err
	}
	lossText := lossDescription(o, lossName)
	log.Printf("WAN session: RTT %v, loss %s, jitter %v, rate %s", o.rtt, lossText, o.jitter, o.rateStr)
	topo, err := wan.Setup(nsA, nsB, link, link, o.seed)
	if err != nil {
		return fmt.Errorf("setting up namespaces: %w", err)
	}
	var sessionPairs []*pairs.Pair
	defer func() {
		for _, p := range sessionPairs {
			p.Stop()
		}
		if b.origin != nil {
			b.origin.Stop(syscall.SIGTERM, 5*time.Second)
			b.origin = nil
		}
		b.pairs = nil
		if err := topo.Close(); err != nil {
			log.Printf("cleanup: %v", err)
		}
	}()
	env := b.env // a copy: namespaces apply to this session only
	env.ClientNS, env.ServerNS, env.ServerIP = nsA, nsB, topo.AddrB.String()
	dialA := func(addr string) loadgen.DialFunc { return wan.Dialer(nsA, addr) }
	originAddr := net.JoinHostPort(env.ServerIP, strconv.Itoa(env.OriginPort))
	if err := b.startOrigin(nsB, fmt.Sprintf("0.0.0.0:%d", env.OriginPort), dialA(originAddr)); err != nil {
		return err
	}
	res := &report.Results{Mode: "wan", Started: started, Reps: b.c.reps, Commands: map[string]string{},
		Title:   fmt.Sprintf("ptproxy benchmarks: emulated WAN, RTT %v, loss %s", o.rtt, lossText),
		Invoked: strings.TrimSpace("ptbench wan " + strings.Join(args, " ")), Notes: append([]string(nil), notes...),
		Params: map[string]string{"rtt": o.rtt.String(), "loss": strconv.FormatFloat(loss, 'g', -1, 64),
			"loss_model": o.lossModel, "tag": b.c.tag, "rate": o.rateStr, "seed": strconv.FormatUint(o.seed, 10)}}
	if o.lossModel == lossGE {
		res.Params["ge_burst"] = strconv.FormatFloat(o.geBurst, 'f', -1, 64)
	}
	res.Commands["origin"] = b.origin.CommandLine()
	running, err := startPairs(ctx, &env, names, dialA, 30*time.Second, res)
	sessionPairs = append(sessionPairs, running...)
	b.pairs = sessionPairs
	if err != nil {
		return err
	}

	rttMs := float64(o.rtt) / float64(time.Millisecond)

	// 1. Small-request latency at concurrency 1.
	lat := loadCase{name: "latency", ms: true, title: "Small-request latency at concurrency 1 (GET 100 B)",
		req: loadgen.Request{Method: "GET", Path: "/small"}, conc: 1, max: o.latRequests, dur: 60 * time.Second, expect: origin.SmallSize}
	latSc := &report.Scenario{Name: "latency", Title: lat.title,
		Method: fmt.Sprintf("GET /small on one persistent connection, %d requests (bounded by 60 s) after 2 warm-up seconds.", o.latRequests),
		Metrics: append(latencyMetrics("ms", true), report.Metric{Key: "rtts", Label: "p50 in RTTs", Unit: "RTT", LowerBetter: true},
			report.Metric{Key: "errors", Label: "errors", Unit: "count", LowerBetter: true, NoRatio: true})}
	// 2. First request after both ends start.
	firstSc := &report.Scenario{Name: "first", Title: "First request after both ends start",
		Method: fmt.Sprintf("Both ends are started together. first = latency of the first request (new connection to the client side) sent %v after the client side's listener accepts connections; start→200 = from starting both ends to the first 200 while polling every 5 ms. For direct, both are one request on a new TCP connection.", o.settle),
		Metrics: []report.Metric{
			{Key: "first_ms", Label: "first request", Unit: "ms", LowerBetter: true, Plot: true},
			{Key: "first_rtts", Label: "first request in RTTs", Unit: "RTT", LowerBetter: true},
			{Key: "start_to_200_ms", Label: "start → first 200", Unit: "ms", LowerBetter: true, Plot: true},
		}}
	// 3. 1 MiB transfers: download, then upload.
	xfer := loadCase{name: "transfer", ms: true, title: "1 MiB transfer (GET /1m, concurrency 1)",
		req: loadgen.Request{Method: "GET", Path: "/1m"}, conc: 1, max: o.transfers, dur: 60 * time.Second, expect: origin.LargeSize, transfer: true}
	wireMethod := " Bytes on the link: every IP packet both ways that entered the emulated link (as sent, lost packets included; the forwarder's counters read before the first request and 50 ms after the last response, so that the last acknowledgements count), divided by the transfers completed; idle pairs' QUIC keep-alives (tens of bytes a second) are included."
	xferSc := &report.Scenario{Name: "transfer", Title: xfer.title,
		Method:  fmt.Sprintf("%d sequential GET /1m on one persistent connection from the load generator (bounded by 60 s), no warm-up: the first transfer of each repetition starts on a new connection to the client side (for direct, a new TCP connection across the link, in slow start); time from sending the request to the last byte.", o.transfers) + wireMethod,
		Metrics: transferMetrics()}
	up := loadCase{name: "upload", ms: true, title: "1 MiB upload (POST /echo?discard, concurrency 1)",
		req:  loadgen.Request{Method: "POST", Path: "/echo?discard", Body: make([]byte, origin.LargeSize)},
		conc: 1, max: o.transfers, dur: 60 * time.Second, expect: int64(len(strconv.Itoa(origin.LargeSize)) + 1), transfer: true}
	upSc := &report.Scenario{Name: "upload", Title: up.title,
		Method:  fmt.Sprintf("%d sequential POST /echo?discard with a 1 MiB body (Content-Length) on one persistent connection from the load generator (bounded by 60 s), no warm-up, like the GETs above; the origin reads the whole body and answers its length (8 bytes); time from sending the request head to the last byte of the answer.", o.transfers) + wireMethod,
		Metrics: transferMetrics()}
	// 4. Recovery after a server restart.
	recSc := &report.Scenario{Name: "recovery", Title: "Recovery after the server side restarts",
		Method: "The server-side process gets SIGINT and, once it has exited, is started again; a request is sent every 5 ms (new connection after a failure, 2 s bound per try). recovery = from the restart to the first 200; outage = from the SIGINT to the first 200. Direct has no proxy to restart.",
		Metrics: []report.Metric{
			{Key: "recovery_ms", Label: "restart → first 200", Unit: "ms", LowerBetter: true, Plot: true},
			{Key: "outage_ms", Label: "SIGINT → first 200", Unit: "ms", LowerBetter: true},
		}}
	res.Scenarios = []*report.Scenario{latSc, firstSc, xferSc, upSc, recSc}

	for rep := 1; rep <= b.c.reps; rep++ {
		for _, p := range sessionPairs {
			r := measureLoadDial(ctx, b, p, lat, 2*time.Second, dialA(p.Addr))
			r.Rep = rep
			if v, ok := r.Values["p50"]; ok {
				r.Values["rtts"] = v / rttMs
			}
			latSc.Add(r)
			log.Printf("latency  rep %d %-8s %s", rep, p.Name, brief(r))
		}
	}
	latSc.Finish()
	for rep := 1; rep <= b.c.reps; rep++ {
		for _, p := range sessionPairs {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r := measureFirst(ctx, p, dialA(p.Addr), o.settle)
			r.Rep = rep
			if v, ok := r.Values["first_ms"]; ok {
				r.Values["first_rtts"] = v / rttMs
			}
			firstSc.Add(r)
			log.Printf("first    rep %d %-8s %s", rep, p.Name, brief(r))
		}
	}
	firstSc.Finish()
	for _, t := range []struct {
		lc loadCase
		sc *report.Scenario
	}{{xfer, xferSc}, {up, upSc}} {
		for rep := 1; rep <= b.c.reps; rep++ {
			for _, p := range sessionPairs {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				r := measureTransfer(ctx, b, p, t.lc, dialA(p.Addr), topo.Fwd)
				r.Rep = rep
				t.sc.Add(r)
				log.Printf("%-8s rep %d %-8s %s", t.lc.name, rep, p.Name, brief(r))
			}
		}
		t.sc.Finish()
	}
	for rep := 1; rep <= b.c.reps; rep++ {
		for _, p := range sessionPairs {
			if p.Server == nil {
				continue
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r := measureRecovery(ctx, p, dialA(p.Addr))
			r.Rep = rep
			recSc.Add(r)
			log.Printf("recovery rep %d %-8s %s", rep, p.Name, brief(r))
		}
	}
	recSc.Finish()

	res.Host = b.hostInfo()
	lossHow := "independent (Bernoulli)"
	if link.GE != nil {
		lossHow = link.GE.String() + ", each direction its own state"
	}
	res.Host["link"] = fmt.Sprintf("RTT %v (%v each way), jitter ±%v, loss %s each way, %s (seed %d), rate %s each way, queue one BDP", o.rtt, o.rtt/2, o.jitter, lossName, lossHow, o.seed, o.rateStr)
	ab, ba := topo.Fwd.Stats()
	res.Notes = append(res.Notes,
		fmt.Sprintf("Emulation: namespaces %s (load generator, client sides) and %s (server sides, origin), one TUN device each (10.201.0.1 and 10.201.0.2), joined by the harness's user-space forwarder, which shapes IP packets: TCP and QUIC see the same delay, loss and rate.", nsA, nsB),
		fmt.Sprintf("Forwarder counters, A→B: %d read, %d forwarded, %d lost, %d queue drops; B→A: %d read, %d forwarded, %d lost, %d queue drops.", ab.Read, ab.Forwarded, ab.Lost, ab.QueueDrops, ba.Read, ba.Forwarded, ba.Lost, ba.QueueDrops),
		fmt.Sprintf("Loss model: %s.", map[bool]string{true: "Gilbert–Elliott: two states per direction, good (no loss) and bad (every packet lost); r = P(bad→good) = 1/mean burst, p = P(good→bad) = mean·r/(1−mean), so the long-run loss rate is the --loss value and losses come in bursts of " + strconv.FormatFloat(o.geBurst, 'f', -1, 64) + " packets on average", false: "Bernoulli: every packet lost independently with the --loss probability"}[link.GE != nil]),
		fmt.Sprintf("ptproxy runs with system.connect_interval = %v (the default); its client waits that long after losing the session before dialling again.", o.connectInterval),
		"The load generator runs in this process but dials from namespace "+nsA+" (a thread switched there with setns), like an application next to the client side.",
	)
	res.Targets = wanTargets(res, o, loss)
	res.Duration = time.Since(started).Round(time.Second).String()
	res.Notes = append(res.Notes, b.experimentNotes(res.Pairs)...)
	base := b.base(wanBase(o, lossName))
	if err := res.Write(b.c.out, base); err != nil {
		return err
	}
	log.Printf("wrote %s/%s.md", b.c.out, base)
	return nil
}

func transferMetrics() []report.Metric {
	return []report.Metric{
		{Key: "p50", Label: "transfer time (median)", Unit: "ms", LowerBetter: true, Plot: true},
		{Key: "max", Label: "transfer time (max)", Unit: "ms", LowerBetter: true},
		{Key: "mibps", Label: "throughput", Unit: "MiB/s"},
		{Key: "wire_mib", Label: "bytes on the link per transfer (both ways)", Unit: "MiB", LowerBetter: true, Plot: true},
		{Key: "wire_fwd_mib", Label: "… of which toward the receiver", Unit: "MiB", LowerBetter: true},
	}
}

// measureTransfer runs one transfer case (no warm-up) and counts the bytes
// the emulated link carried during it.
func measureTransfer(ctx context.Context, b *bench, p *pairs.Pair, lc loadCase, dial loadgen.DialFunc, fwd *wan.Forwarder) report.Run {
	var ab0, ba0, ab1, ba1 wan.Stats
	r := measureLoadHooks(ctx, b, p, lc, 0, dial,
		func() { ab0, ba0 = fwd.Stats() },
		func() {
			time.Sleep(50 * time.Millisecond) // the last acknowledgements
			ab1, ba1 = fwd.Stats()
		})
	delete(r.Values, "cpu_us")
	if n := r.Values["requests"]; n > 0 {
		ab, ba := ab1.Sub(ab0), ba1.Sub(ba0)
		// A→B carries requests (and uploads), B→A responses (downloads).
		toward := ba.SentBytes
		if lc.req.Body != nil {
			toward = ab.SentBytes
		}
		r.Values["wire_mib"] = float64(ab.SentBytes+ba.SentBytes) / n / (1 << 20)
		r.Values["wire_fwd_mib"] = float64(toward) / n / (1 << 20)
	}
	delete(r.Values, "requests")
	return r
}

// measureFirst restarts the pair twice: once to time start→first 200 while
// polling, once to time the first request after both ends are up and idle.
func measureFirst(ctx context.Context, p *pairs.Pair, dial loadgen.DialFunc, settle time.Duration) report.Run {
	run := report.Run{Pair: p.Name, Values: map[string]float64{}}
	req := loadgen.Request{Method: "GET", Path: "/small"}
	req.Prepare()
	one := func() (time.Duration, error) {
		t0 := time.Now()
		nc, err := dial(ctx)
		if err != nil {
			return 0, err
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(30 * time.Second))
		st, _, err := loadgen.NewConn(nc).Do(&req)
		if err == nil && st != 200 {
			err = fmt.Errorf("status %d", st)
		}
		return time.Since(t0), err
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	if p.Server == nil {
		d, err := one()
		if err != nil {
			run.Err = err.Error()
			return run
		}
		run.Values["first_ms"] = ms(d)
		return run
	}
	// (a) start → first 200.
	p.Stop()
	t0 := time.Now()
	if err := p.Start(); err != nil {
		run.Err = err.Error()
		return run
	}
	at, _, err := loadgen.Poll(ctx, dial, req, 5*time.Millisecond, 2*time.Second, 30*time.Second)
	if err != nil {
		run.Err = "start→200: " + err.Error()
	} else {
		run.Values["start_to_200_ms"] = ms(at.Sub(t0))
	}
	// (b) first request after both ends are up and idle.
	p.Stop()
	if err := p.Start(); err != nil {
		run.Err = err.Error()
		return run
	}
	if err := p.WaitListening(ctx, dial, 20*time.Second); err != nil {
		run.Err = firstLine(err)
		return run
	}
	time.Sleep(settle)
	d, err := one()
	if err != nil {
		run.Err = "first request: " + err.Error()
	} else {
		run.Values["first_ms"] = ms(d)
	}
	// Leave the pair working for what follows.
	loadgen.Poll(ctx, dial, req, 20*time.Millisecond, 5*time.Second, 30*time.Second)
	return run
}

// measureRecovery stops the server side with SIGINT, starts it again and
// times the first 200 through the pair.
func measureRecovery(ctx context.Context, p *pairs.Pair, dial loadgen.DialFunc) report.Run {
	run := report.Run{Pair: p.Name, Values: map[string]float64{}}
	req := loadgen.Request{Method: "GET", Path: "/small"}
	if _, _, err := loadgen.Poll(ctx, dial, req, 20*time.Millisecond, 5*time.Second, 30*time.Second); err != nil {
		run.Err = "pair not working before the restart: " + err.Error()
		return run
	}
	tKill := time.Now()
	p.Server.Stop(p.RestartSignal, 10*time.Second)
	tRestart := time.Now()
	if err := p.Server.Start(); err != nil {
		run.Err = err.Error()
		return run
	}
	at, _, err := loadgen.Poll(ctx, dial, req, 5*time.Millisecond, 2*time.Second, 60*time.Second)
	if err != nil {
		run.Err = err.Error()
		return run
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	run.Values["recovery_ms"] = ms(at.Sub(tRestart))
	run.Values["outage_ms"] = ms(at.Sub(tKill))
	return run
}

func wanTargets(res *report.Results, o wanOpts, loss float64) []report.Target {
	rttMs := float64(o.rtt) / float64(time.Millisecond)
	verdict := func(ok, have bool) string {
		if !have {
			return "n/a"
		}
		return map[bool]string{true: "met", false: "missed"}[ok]
	}
	var ts []report.Target
	if s := res.Find("latency"); s != nil {
		// "Within 1.05 × RTT of direct": at most 5% of an RTT above
		// direct's p50 (direct carries the emulator's own overhead, so
		// this reading cancels it); the absolute reading is shown too.
		p, d := s.Get("ptproxy", "p50"), s.Get("direct", "p50")
		ts = append(ts, report.Target{Goal: fmt.Sprintf("small-request p50 ≤ direct's p50 + 0.05 × RTT (%.1f ms)", d+0.05*rttMs),
			Measured: fmt.Sprintf("ptproxy %.1f ms = direct + %.3f × RTT (direct %.1f ms)", p, (p-d)/rttMs, d),
			Verdict:  verdict(p <= d+0.05*rttMs, !math.IsNaN(p) && !math.IsNaN(d))})
		ts = append(ts, report.Target{Goal: fmt.Sprintf("(strict reading) small-request p50 ≤ 1.05 × RTT (%.1f ms)", 1.05*rttMs),
			Measured: fmt.Sprintf("ptproxy %.1f ms = %.3f × RTT; direct itself %.3f × RTT", p, p/rttMs, d/rttMs),
			Verdict:  verdict(p <= 1.05*rttMs, !math.IsNaN(p))})
		if loss > 0 {
			pp, np := s.Get("ptproxy", "p99"), s.Get("nginx", "p99")
			ts = append(ts, report.Target{Goal: "p99 at this loss ≤ 0.5 × nginx pair's",
				Measured: fmt.Sprintf("ptproxy %.1f ms, nginx %.1f ms: %.2f×", pp, np, pp/np),
				Verdict:  verdict(pp <= 0.5*np, !math.IsNaN(pp/np))})
		}
	}
	if s := res.Find("first"); s != nil {
		f := s.Get("ptproxy", "first_ms")
		ts = append(ts, report.Target{Goal: fmt.Sprintf("first request after both ends start ≤ 1.1 × RTT (%.1f ms)", 1.1*rttMs),
			Measured: fmt.Sprintf("ptproxy %.1f ms = %.2f × RTT (nginx %s ms, Caddy %s ms, direct %s ms)", f, f/rttMs,
				report.Fmt(s.Get("nginx", "first_ms")), report.Fmt(s.Get("caddy", "first_ms")), report.Fmt(s.Get("direct", "first_ms"))),
			Verdict: verdict(f <= 1.1*rttMs, !math.IsNaN(f))})
	}
	// Bulk transfers under random loss (issue 12's targets for FEC).
	if bound, ok := transferBound(loss); ok {
		lossText := lossDescription(o, strconv.FormatFloat(loss*100, 'g', -1, 64)+"%")
		for _, x := range []struct{ scenario, what string }{{"transfer", "1 MiB GET"}, {"upload", "1 MiB POST"}} {
			s := res.Find(x.scenario)
			if s == nil {
				continue
			}
			p, n := s.Get("ptproxy", "p50"), s.Get("nginx", "p50")
			ts = append(ts, report.Target{Goal: fmt.Sprintf("%s at %s loss ≤ %g × nginx pair's (median transfer time)", x.what, lossText, bound),
				Measured: fmt.Sprintf("ptproxy %s ms, nginx %s ms: %.2f×", report.Fmt(p), report.Fmt(n), p/n),
				Verdict:  verdict(p <= bound*n, !math.IsNaN(p/n))})
		}
	}
	if s := res.Find("recovery"); s != nil {
		r := s.Get("ptproxy", "recovery_ms")
		bound := float64(o.connectInterval)/float64(time.Millisecond) + rttMs
		ts = append(ts, report.Target{Goal: fmt.Sprintf("requests succeed again ≤ connect_interval + 1 RTT (%.0f ms) after the server restarts", bound),
			Measured: fmt.Sprintf("ptproxy %.0f ms after the restart (%.0f ms after the SIGINT)", r, s.Get("ptproxy", "outage_ms")),
			Verdict:  verdict(r <= bound, !math.IsNaN(r))})
	}
	return ts
}

// transferBound is the largest ratio of ptproxy's 1 MiB transfer time to
// nginx's that the targets allow at loss rate loss (docs/benchmarks/fec.md:
// 1.5× at 1%, 2× at 3%); false for loss rates without a target.
func transferBound(loss float64) (float64, bool) {
	switch {
	case math.Abs(loss-0.01) < 1e-9:
		return 1.5, true
	case math.Abs(loss-0.03) < 1e-9:
		return 2, true
	}
	return 0, false
}
