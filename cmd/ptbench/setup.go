package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ptproxy/ptproxy/cmd/ptbench/internal/loadgen"
	"github.com/ptproxy/ptproxy/cmd/ptbench/internal/pairs"
	"github.com/ptproxy/ptproxy/cmd/ptbench/internal/procstat"
	"github.com/ptproxy/ptproxy/cmd/ptbench/internal/report"
)

const caddyModule = "github.com/caddyserver/caddy/v2/cmd/caddy@v2.11.9"

// common flags of loopback, wan and profile.
type common struct {
	pairs    string
	reps     int
	out      string
	repo     string
	install  bool
	keep     bool
	portBase int
	ptEnv    string
	altEnv   string
	altRev   string
	tag      string
}

func (c *common) register(fs *flag.FlagSet, defPairs string, defReps int) {
	fs.StringVar(&c.pairs, "pairs", defPairs, "comma-separated pairs to run: "+strings.Join(pairs.All, ","))
	fs.IntVar(&c.reps, "reps", defReps, "repetitions of every measurement (pairs alternate within each repetition)")
	fs.StringVar(&c.out, "out", "", "results folder (default: <repo>/docs/benchmarks)")
	fs.StringVar(&c.repo, "repo", "", "ptproxy repository root (default: from `go env GOMOD`)")
	fs.BoolVar(&c.install, "install", true, "install missing prerequisites (apt-get nginx haproxy; go install caddy)")
	fs.BoolVar(&c.keep, "keep", false, "keep the scratch folder (configs, logs)")
	fs.StringVar(&c.ptEnv, "ptproxy-env", "", "comma-separated KEY=VALUE added to the ptproxy processes' environment (experiments, e.g. GOMAXPROCS=1)")
	fs.StringVar(&c.altEnv, "alt-env", strings.Join(pairs.DefaultAltEnv, ","), "comma-separated KEY=VALUE added (after --ptproxy-env) to the processes of the "+pairs.PtproxyAlt+" pair")
	fs.StringVar(&c.altRev, "alt-commit", "", "build the ptproxy of the "+pairs.PtproxyAlt+" pair from this git revision instead of the working tree, to compare two versions in one run (with --alt-env '' for the same settings)")
	fs.StringVar(&c.tag, "tag", "", "suffix of the results files (results-<mode>[-<tag>]), to keep an experiment apart")
	fs.IntVar(&c.portBase, "port-base", 21000, "first port of the harness's range (origin at +80, pair i at +100i+80 and +100i+43)")
}

// bench is one harness session: scratch folder, binaries, certificates,
// origin and pairs, all torn down by close.
type bench struct {
	c       common
	work    string
	env     pairs.Env
	origin  *pairs.Proc
	pairs   []*pairs.Pair
	cleanup []func()
	self    string
	commit  string // what ptproxy was built from (treeCommit)
	// altCommit is what the ptproxy-alt pair's ptproxy was built from
	// (--alt-commit; "" when it is the same binary).
	altCommit string
}

// base returns the results file name for mode, with the tag if any.
func (b *bench) base(mode string) string {
	if b.c.tag != "" {
		return mode + "-" + b.c.tag
	}
	return mode
}

func (b *bench) close() {
	for _, p := range b.pairs {
		p.Stop()
	}
	if b.origin != nil {
		b.origin.Stop(syscall.SIGTERM, 5*time.Second)
	}
	for i := len(b.cleanup) - 1; i >= 0; i-- {
		b.cleanup[i]()
	}
	if b.work != "" && !b.c.keep {
		os.RemoveAll(b.work)
	} else if b.work != "" {
		log.Printf("scratch folder kept: %s", b.work)
	}
}

func (b *bench) pairNames() ([]string, error) {
	var out []string
	for _, n := range strings.Split(b.c.pairs, ",") {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		ok := false
		for _, a := range pairs.All {
			ok = ok || a == n
		}
		if !ok {
			return nil, fmt.Errorf("unknown pair %q (known: %s)", n, strings.Join(pairs.All, ","))
		}
		out = append(out, n)
	}
	return out, nil
}

func repoRoot(flagVal string) (string, error) {
	if flagVal != "" {
		return filepath.Abs(flagVal)
	}
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the ptproxy module: run from the repository or pass --repo")
	}
	return filepath.Dir(mod), nil
}

func run(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}

func findBin(name string, extra ...string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, p := range extra {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	return ""
}

// prepare builds ptproxy, installs what is missing, writes certificates
// and returns the binaries; pairs whose program is unavailable are dropped
// with a note.
func (b *bench) prepare(names []string, notes *[]string) ([]string, error) {
	root, err := repoRoot(b.c.repo)
	if err != nil {
		return nil, err
	}
	b.c.repo = root
	if b.c.out == "" {
		b.c.out = filepath.Join(root, "docs", "benchmarks")
	}
	b.work, err = os.MkdirTemp("", "ptbench-")
	if err != nil {
		return nil, err
	}
	if b.self, err = os.Executable(); err != nil {
		return nil, err
	}
	os.MkdirAll(filepath.Join(b.work, "bin"), 0o755)
	bins := pairs.Bins{Ptproxy: filepath.Join(b.work, "bin", "ptproxy")}
	log.Printf("building ptproxy from %s", root)
	// The commit is read as the binary is built: the tree may change
	// during a long run, and the results must name what was measured.
	b.commit = treeCommit(root)
	build := exec.Command("go", "build", "-o", bins.Ptproxy, "./cmd/ptproxy")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build ./cmd/ptproxy: %v\n%s", err, out)
	}
	if b.c.altRev != "" {
		if bins.PtproxyAlt, b.altCommit, err = buildAt(root, b.c.altRev, b.work); err != nil {
			return nil, err
		}
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	var apt []string
	if want[pairs.Nginx] && findBin("nginx", "/usr/sbin/nginx") == "" {
		apt = append(apt, "nginx")
	}
	if want[pairs.HAProxy] && findBin("haproxy", "/usr/sbin/haproxy") == "" {
		apt = append(apt, "haproxy")
	}
	if len(apt) > 0 && b.c.install {
		log.Printf("installing %s with apt-get", strings.Join(apt, " "))
		if _, err := run("apt-get", append([]string{"install", "-y", "--no-install-recommends"}, apt...)...); err != nil {
			run("apt-get", "update")
			if _, err := run("apt-get", append([]string{"install", "-y", "--no-install-recommends"}, apt...)...); err != nil {
				log.Printf("apt-get failed: %v", err)
			}
		}
	}
	bins.Nginx = findBin("nginx", "/usr/sbin/nginx")
	bins.HAProxy = findBin("haproxy", "/usr/sbin/haproxy")
	if want[pairs.Caddy] {
		bins.Caddy, err = ensureCaddy(b.c.install)
		if err != nil {
			log.Printf("caddy unavailable: %v", err)
		}
	}
	var kept []string
	for _, n := range names {
		missing := ""
		switch n {
		case pairs.Nginx:
			missing = map[bool]string{true: "nginx"}[bins.Nginx == ""]
		case pairs.HAProxy:
			missing = map[bool]string{true: "haproxy"}[bins.HAProxy == ""]
		case pairs.Caddy:
			missing = map[bool]string{true: "caddy"}[bins.Caddy == ""]
		}
		if missing != "" {
			*notes = append(*notes, fmt.Sprintf("pair %s skipped: %s not available", n, missing))
			continue
		}
		kept = append(kept, n)
	}
	certs := filepath.Join(b.work, "certs")
	if _, err := run(bins.Ptproxy, "certs", "--client", pairs.ClientName, "--server", pairs.ServerName, "--dir", certs); err != nil {
		return nil, err
	}
	b.env = pairs.Env{Work: b.work, Certs: certs, Bins: bins, ServerIP: "127.0.0.1",
		OriginPort: b.c.portBase + 80, PortBase: b.c.portBase}
	if b.env.PtproxyEnv, err = envList("--ptproxy-env", b.c.ptEnv); err != nil {
		return nil, err
	}
	if b.env.PtproxyAltEnv, err = envList("--alt-env", b.c.altEnv); err != nil {
		return nil, err
	}
	return kept, nil
}

// envList parses a flag's comma-separated KEY=VALUE list.
func envList(flagName, val string) ([]string, error) {
	var out []string
	for _, kv := range strings.Split(val, ",") {
		if kv = strings.TrimSpace(kv); kv != "" {
			if !strings.Contains(kv, "=") {
				return nil, fmt.Errorf("%s: %q is not KEY=VALUE", flagName, kv)
			}
			out = append(out, kv)
		}
	}
	return out, nil
}

// ensureCaddy returns a caddy v2.11.9 binary, installing it with go
// install into the user cache folder when needed.
func ensureCaddy(install bool) (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "ptbench", "bin")
	bin := filepath.Join(dir, "caddy")
	isRight := func(p string) bool {
		out, err := exec.Command("go", "version", "-m", p).Output()
		return err == nil && strings.Contains(string(out), "github.com/caddyserver/caddy/v2\tv2.11.9")
	}
	if isRight(bin) {
		return bin, nil
	}
	if p := findBin("caddy"); p != "" && isRight(p) {
		return p, nil
	}
	if !install {
		return "", errors.New("caddy v2.11.9 not found (run with --install)")
	}
	log.Printf("installing caddy: GOBIN=%s go install %s", dir, caddyModule)
	cmd := exec.Command("go", "install", caddyModule)
	cmd.Env = append(os.Environ(), "GOBIN="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install %s: %v\n%s", caddyModule, err, out)
	}
	return bin, nil
}

// startOrigin starts the origin process (in ns when set) and waits for it.
func (b *bench) startOrigin(ns, listen string, dial loadgen.DialFunc) error {
	b.origin = &pairs.Proc{Name: "origin", NS: ns, Argv: []string{b.self, "origin", "--listen", listen},
		Log: filepath.Join(b.work, "origin.log")}
	if err := b.origin.Start(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _, err := loadgen.Poll(ctx, dial, loadgen.Request{Method: "GET", Path: "/small"}, 10*time.Millisecond, time.Second, 10*time.Second)
	if err != nil {
		return fmt.Errorf("origin not ready: %v\n%s", err, b.origin.Tail(2000))
	}
	return nil
}

// startPairs builds and starts the named pairs, recording in res which
// started (with their command lines) and which failed and why; a pair that
// fails to start is left out, the others are returned, all started.
func startPairs(ctx context.Context, env *pairs.Env, names []string, dial func(addr string) loadgen.DialFunc, timeout time.Duration, res *report.Results) ([]*pairs.Pair, error) {
	var started []*pairs.Pair
	for _, n := range names {
		p, err := pairs.Build(env, n)
		if err != nil {
			return started, err
		}
		log.Printf("starting pair %s", n)
		if err := startPair(ctx, p, dial(p.Addr), timeout); err != nil {
			res.Notes = append(res.Notes, fmt.Sprintf("pair %s failed to start: %v", n, firstLine(err)))
			log.Printf("pair %s failed: %v", n, err)
			continue
		}
		started = append(started, p)
		res.Pairs = append(res.Pairs, n)
		for _, pr := range p.Procs() {
			res.Commands[pr.Name] = pr.CommandLine()
		}
	}
	return started, nil
}

// startPair starts p and waits (bounded) until a request through it
// returns 200.
func startPair(ctx context.Context, p *pairs.Pair, dial loadgen.DialFunc, timeout time.Duration) error {
	if err := p.Start(); err != nil {
		return err
	}
	if err := p.WaitListening(ctx, dial, timeout); err != nil {
		p.Stop()
		return err
	}
	if _, _, err := loadgen.Poll(ctx, dial, loadgen.Request{Method: "GET", Path: "/small"}, 20*time.Millisecond, 5*time.Second, timeout); err != nil {
		err = fmt.Errorf("%s: no 200 through the pair: %v", p.Name, err)
		for _, pr := range p.Procs() {
			err = fmt.Errorf("%w\n--- %s log:\n%s", err, pr.Name, pr.Tail(1500))
		}
		p.Stop()
		return err
	}
	return nil
}

// hostInfo describes the machine and the programs' versions.
func hostInfoOf(commit string, bins pairs.Bins) map[string]string {
	h := map[string]string{
		"cpus":       strconv.Itoa(runtime.NumCPU()),
		"go":         runtime.Version(),
		"os/arch":    runtime.GOOS + "/" + runtime.GOARCH,
		"GOMAXPROCS": "default (all CPUs) for ptproxy, Caddy, origin and load generator",
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		h["kernel"] = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				h["cpu"] = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if l, _, ok := strings.Cut(string(b), "\n"); ok {
			h["memory"] = strings.Join(strings.Fields(l)[1:], " ")
		}
	}
	ver := func(bin string, args ...string) string {
		if bin == "" {
			return "not used"
		}
		out, _ := exec.Command(bin, args...).CombinedOutput()
		l, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		return l
	}
	h["nginx"] = ver(bins.Nginx, "-v")
	h["haproxy"] = ver(bins.HAProxy, "-v")
	if bins.Caddy != "" {
		h["caddy"] = "v2.11.9 (" + caddyModule + ")"
	}
	if commit != "" {
		h["ptproxy commit"] = commit
	}
	return h
}

// hostInfo is hostInfoOf with the commit of the ptproxy-alt pair, when
// it was built from another one.
func (b *bench) hostInfo() map[string]string {
	h := hostInfoOf(b.commit, b.env.Bins)
	if b.altCommit != "" {
		h[pairs.PtproxyAlt+" commit"] = b.altCommit + " (--alt-commit)"
	}
	return h
}

// buildAt builds ptproxy as of git revision rev of repo (exported with
// git archive into work, so the repository is left as it is) and returns
// the binary and the revision's short commit.
func buildAt(repo, rev, work string) (bin, commit string, err error) {
	out, err := exec.Command("git", "-C", repo, "rev-parse", "--short", "--verify", rev+"^{commit}").Output()
	if err != nil {
		return "", "", fmt.Errorf("--alt-commit %q: not a commit of %s", rev, repo)
	}
	commit = strings.TrimSpace(string(out))
	src := filepath.Join(work, "src-"+commit)
	if err := os.MkdirAll(src, 0o755); err != nil {
		return "", "", err
	}
	archive := exec.Command("sh", "-c", `git -C "$1" archive "$2" | tar -x -C "$3"`, "sh", repo, commit, src)
	if out, err := archive.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("--alt-commit: exporting %s: %v\n%s", commit, err, out)
	}
	bin = filepath.Join(work, "bin", "ptproxy-"+commit)
	log.Printf("building %s's ptproxy from %s", pairs.PtproxyAlt, commit)
	build := exec.Command("go", "build", "-o", bin, "./cmd/ptproxy")
	build.Dir = src
	if out, err := build.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("--alt-commit: go build ./cmd/ptproxy at %s: %v\n%s", commit, err, out)
	}
	return bin, commit, nil
}

// treeCommit names the commit of the working tree at repo, and says so
// when the tree differs from it ("" when git cannot tell).
func treeCommit(repo string) string {
	out, err := exec.Command("git", "-C", repo, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return ""
	}
	c := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "-C", repo, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(bytes.TrimSpace(st)) > 0 {
		c += " + uncommitted changes in the working tree (ptproxy is built from the working tree)"
	}
	return c
}

// cpuMeter samples CPU time of a pair, of the origin, of this process and
// of the whole machine, to charge the pair and to estimate foreign load.
type cpuMeter struct {
	pair   func() []int
	origin int
	t0     time.Time
	p0, o0 time.Duration
	s0, m0 time.Duration
	// results
	Pair, Origin, Self, Machine, Wall time.Duration
}

func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var ticks uint64
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, _ := strconv.ParseUint(v, 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * time.Second / procstat.ClockTick
}

func (m *cpuMeter) Begin() {
	m.t0 = time.Now()
	m.p0 = procstat.CPU(m.pair())
	m.o0 = procstat.CPU([]int{m.origin})
	m.s0 = procstat.CPU([]int{os.Getpid()})
	m.m0 = machineBusy()
}

func (m *cpuMeter) End() {
	m.Wall = time.Since(m.t0)
	m.Pair = procstat.CPU(m.pair()) - m.p0
	m.Origin = procstat.CPU([]int{m.origin}) - m.o0
	m.Self = procstat.CPU([]int{os.Getpid()}) - m.s0
	m.Machine = machineBusy() - m.m0
}

// Foreign is the share of the machine (in CPUs) busy with processes other
// than ours during the run: the noise from others' work.
func (m *cpuMeter) Foreign() float64 {
	if m.Wall <= 0 {
		return 0
	}
	f := (m.Machine - m.Pair - m.Origin - m.Self).Seconds() / m.Wall.Seconds()
	if f < 0 {
		f = 0
	}
	return f
}

// fileLimit is the RLIMIT_NOFILE the harness sets for itself and so for
// every process it starts: the idle scenario holds 1,100 connections to a
// pair's client side, and as many again may be open behind it.
const fileLimit = 65536

// minFileLimit is what the idle scenario needs at the least: 1,100
// connections in the harness, twice that in a pair's client side.
const minFileLimit = 4096

// nofile is the open-file limit in force (set by raiseFileLimit).
var nofile uint64

// raiseFileLimit raises this process's RLIMIT_NOFILE (soft, and hard when
// needed, which takes root) to at least want, or the soft limit to the hard
// one when the hard one cannot be raised, and returns the soft limit now in
// force. Go raises its own soft limit at start-up but os/exec gives
// children the original one back; an explicit setrlimit makes children
// (the pairs, the origin) inherit the raised limit.
func raiseFileLimit(want uint64) (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	n := l
	n.Cur = max(l.Cur, want)
	n.Max = max(l.Max, want)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &n); err != nil {
		n = l
		n.Cur = l.Max
		if err2 := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &n); err2 != nil {
			nofile = l.Cur
			return l.Cur, err2
		}
		nofile = n.Cur
		return n.Cur, err
	}
	nofile = n.Cur
	return n.Cur, nil
}

func tcpDialer(addr string) loadgen.DialFunc {
	d := net.Dialer{Timeout: 5 * time.Second}
	return func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
}

// experimentNotes says what the ptproxy processes of the run had in their
// environment beyond the defaults.
func (b *bench) experimentNotes(ran []string) []string {
	var out []string
	if len(b.env.PtproxyEnv) > 0 {
		out = append(out, "Experiment: ptproxy ran with "+strings.Join(b.env.PtproxyEnv, " ")+" in its environment.")
	}
	if slices.Contains(ran, pairs.PtproxyAlt) {
		what := "ptproxy"
		if b.altCommit != "" {
			what += " built from commit " + b.altCommit
		}
		env := "nothing"
		if len(b.env.PtproxyAltEnv) > 0 {
			env = strings.Join(b.env.PtproxyAltEnv, " ")
		}
		out = append(out, "Pair "+pairs.PtproxyAlt+" is "+what+" with "+env+" added to both processes' environment, alternated with the other pairs in every repetition.")
	}
	return out
}
