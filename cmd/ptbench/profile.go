package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ptproxy/ptproxy/cmd/ptbench/internal/loadgen"
	"github.com/ptproxy/ptproxy/cmd/ptbench/internal/origin"
	"github.com/ptproxy/ptproxy/cmd/ptbench/internal/pairs"
	"github.com/ptproxy/ptproxy/cmd/ptbench/internal/procstat"
)

// runProfile samples both ptproxy processes with perf while the loopback
// load at concurrency 64 runs, and writes perf's reports (flat, by
// process, and cumulative with callers) to docs/benchmarks/profile/.
func runProfile(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("ptbench profile", flag.ExitOnError)
	var c common
	c.register(fs, "ptproxy", 1)
	dur := fs.Duration("duration", 10*time.Second, "length of the profiled load")
	conc := fs.Int("concurrency", 64, "concurrency of the GET /small load")
	freq := fs.Int("freq", 999, "perf sampling frequency (Hz)")
	path := fs.String("path", "/small", "resource to GET: /small, /1m or /chunked")
	fs.Parse(args)
	expect := map[string]int64{"/small": origin.SmallSize, "/1m": origin.LargeSize, "/chunked": origin.ChunkedSize}
	want, ok := expect[*path]
	if !ok {
		return fmt.Errorf("--path must be /small, /1m or /chunked")
	}
	perf := findBin("perf", "/usr/bin/perf")
	if perf == "" {
		if c.install {
			run("apt-get", "install", "-y", "--no-install-recommends", "linux-perf")
		}
		if perf = findBin("perf", "/usr/bin/perf"); perf == "" {
			return fmt.Errorf("perf not found (apt-get install linux-perf)")
		}
	}
	// One ptproxy pair is profiled: ptproxy, or ptproxy-alt (with
	// --alt-env added) to profile another setting.
	name := c.pairs
	if !pairs.IsPtproxy(name) {
		return fmt.Errorf("--pairs must be %s or %s (one pair is profiled), not %q", pairs.Ptproxy, pairs.PtproxyAlt, name)
	}
	b := &bench{c: c}
	defer b.close()
	var notes []string
	if _, err := b.prepare([]string{name}, &notes); err != nil {
		return err
	}
	if err := b.startOrigin("", fmt.Sprintf("127.0.0.1:%d", b.env.OriginPort), tcpDialer(fmt.Sprintf("127.0.0.1:%d", b.env.OriginPort))); err != nil {
		return err
	}
	p, err := pairs.Build(&b.env, name)
	if err != nil {
		return err
	}
	if err := startPair(ctx, p, tcpDialer(p.Addr), 20*time.Second); err != nil {
		return err
	}
	b.pairs = append(b.pairs, p)
	sub := fmt.Sprintf("c%d", *conc)
	if *path != "/small" {
		sub += "-" + strings.TrimPrefix(*path, "/")
	}
	outDir := filepath.Join(b.c.out, "profile", sub)
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	sides := []struct {
		name string
		pid  int
	}{{"client", p.Client.Pid()}, {"server", p.Server.Pid()}}
	recordArgs := func(pid int, data string) []string {
		return []string{"record", "-F", strconv.Itoa(*freq), "-g", "-p", strconv.Itoa(pid), "-o", data, "--", "sleep", strconv.Itoa(int(dur.Seconds()))}
	}
	type result struct {
		r   *loadgen.Result
		err error
	}
	done := make(chan result, 1)
	m := &cpuMeter{pair: p.Pids, origin: b.origin.Pid()}
	var cs0, cs1 [2]int64
	begin := func() {
		m.Begin()
		cs0 = [2]int64{procstat.CtxSwitches(p.Client.Pid()), procstat.CtxSwitches(p.Server.Pid())}
	}
	end := func() {
		m.End()
		cs1 = [2]int64{procstat.CtxSwitches(p.Client.Pid()), procstat.CtxSwitches(p.Server.Pid())}
	}
	go func() {
		r, err := loadgen.Run(ctx, loadgen.Spec{Dial: tcpDialer(p.Addr), Request: loadgen.Request{Method: "GET", Path: *path},
			Concurrency: *conc, MaxRequests: 5_000_000, Duration: *dur + 2*time.Second, Warmup: time.Second,
			ExpectBytes: want, Begin: begin, End: end})
		done <- result{r, err}
	}()
	time.Sleep(1500 * time.Millisecond) // into the measured phase
	var perfCmds []*exec.Cmd
	for _, sd := range sides {
		a := recordArgs(sd.pid, filepath.Join(b.work, "perf-"+sd.name+".data"))
		log.Printf("%s %s", perf, strings.Join(a, " "))
		cmd := exec.Command(perf, a...)
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("perf record: %v", err)
		}
		perfCmds = append(perfCmds, cmd)
	}
	for _, cmd := range perfCmds {
		if err := cmd.Wait(); err != nil {
			return fmt.Errorf("perf record: %v", err)
		}
	}
	res := <-done
	if res.err != nil {
		return res.err
	}
	reqs := float64(max(res.r.Requests, 1))
	label := name
	if env := p.Client.Env; len(env) > 0 {
		label += " (" + strings.Join(env, " ") + ")"
	}
	summary := fmt.Sprintf("# %s pair under GET %s at concurrency %d (loopback, origin and load generator on the same 2 CPUs)\n# %.0f req/s, pair CPU %.1f µs/request, %d errors, foreign load %.2f CPUs\n# context switches per request: client %.1f, server %.1f\n# perf %s (one recording per side)\n",
		label, *path, *conc, res.r.RPS(), float64(m.Pair.Microseconds())/reqs, res.r.Errors, m.Foreign(),
		float64(cs1[0]-cs0[0])/reqs, float64(cs1[1]-cs0[1])/reqs,
		strings.Replace(strings.Join(recordArgs(0, "perf-SIDE.data"), " "), "-p 0", "-p PID", 1))
	reports := []struct {
		file string
		args []string
	}{
		{"flat", []string{"report", "--stdio", "--no-children", "--sort", "dso,sym", "-g", "none", "--percent-limit", "0.5"}},
		{"dso", []string{"report", "--stdio", "--no-children", "--sort", "dso", "-g", "none"}},
		{"cumulative", []string{"report", "--stdio", "--children", "--sort", "sym", "-g", "none", "--percent-limit", "1"}},
	}
	for _, sd := range sides {
		data := filepath.Join(b.work, "perf-"+sd.name+".data")
		for _, rp := range reports {
			out, err := exec.Command(perf, append(rp.args, "-i", data)...).Output()
			if err != nil {
				return fmt.Errorf("perf %s: %v", strings.Join(rp.args, " "), err)
			}
			// Drop perf's header lines that name the scratch folder.
			var keep []string
			for _, l := range strings.Split(string(out), "\n") {
				if strings.HasPrefix(l, "# cmdline") || strings.Contains(l, b.work) {
					continue
				}
				keep = append(keep, l)
			}
			text := summary + "# side: " + sd.name + "\n# perf " + strings.Join(rp.args, " ") + "\n" + strings.Join(keep, "\n")
			if err := os.WriteFile(filepath.Join(outDir, sd.name+"-"+rp.file+".txt"), []byte(text), 0o644); err != nil {
				return err
			}
		}
	}
	log.Print(strings.TrimSpace(summary))
	log.Printf("wrote %s/{client,server}-{flat,dso,cumulative}.txt", outDir)

	return nil
}
