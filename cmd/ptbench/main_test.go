package main

import (
	"math"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ptproxy/ptproxy/cmd/ptbench/internal/report"
)

func TestParsePercentAndRate(t *testing.T) {
	for in, want := range map[string]float64{"1%": 0.01, "0%": 0, " 0.5% ": 0.005, "0.02": 0.02} {
		if got, err := parsePercent(in); err != nil || got != want {
			t.Errorf("parsePercent(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := parsePercent("x%"); err == nil {
		t.Error("bad percent accepted")
	}
	for in, want := range map[string]int64{"100mbit": 100e6, "1gbit": 1e9, "500kbit": 500e3, "0": 0, "2.5Mbit": 2.5e6} {
		if got, err := parseRate(in); err != nil || got != want {
			t.Errorf("parseRate(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := parseRate("fast"); err == nil {
		t.Error("bad rate accepted")
	}
}

func TestWANNamesAndLinks(t *testing.T) {
	o := wanOpts{rtt: 50 * time.Millisecond, lossModel: lossBernoulli, geBurst: 4}
	if got := wanBase(o, "1%"); got != "results-wan-50ms-loss1" {
		t.Errorf("bernoulli base %q", got)
	}
	if got := lossDescription(o, "1%"); got != "1%" {
		t.Errorf("bernoulli description %q", got)
	}
	l, err := wanLink(o, 0.01)
	if err != nil || l.GE != nil || l.Loss != 0.01 || l.Delay != 25*time.Millisecond {
		t.Errorf("bernoulli link %+v %v", l, err)
	}
	o.lossModel, o.geBurst = lossGE, 2.5
	if got := wanBase(o, "0.5%"); got != "results-wan-50ms-loss0_5-ge2_5" {
		t.Errorf("ge base %q", got)
	}
	if got := lossDescription(o, "1%"); got != "1% (Gilbert–Elliott, mean burst 2.5 packets)" {
		t.Errorf("ge description %q", got)
	}
	l, err = wanLink(o, 0.01)
	if err != nil || l.GE == nil || l.Loss != 0 || math.Abs(l.GE.MeanLoss()-0.01) > 1e-12 || l.GE.MeanBurst() != 2.5 {
		t.Errorf("ge link %+v %v", l, err)
	}
	o.geBurst = 0.5
	if _, err := wanLink(o, 0.01); err == nil {
		t.Error("a burst below one packet accepted")
	}
	// A tag follows the model: results-wan-50ms-loss1-ge4-<tag>.
	o.geBurst = 4
	b := &bench{c: common{tag: "fec-on"}}
	if got := b.base(wanBase(o, "1%")); got != "results-wan-50ms-loss1-ge4-fec-on" {
		t.Errorf("tagged base %q", got)
	}
	// And plot-loss reads it back.
	m := wanFileName.FindStringSubmatch("results-wan-50ms-loss1-ge4-fec-on")
	if m == nil || m[1] != "50ms" || m[2] != "1" || m[3] != "4" || m[4] != "fec-on" {
		t.Errorf("file name parsed as %q", m)
	}
}

func wanResults(pairsP50 map[string][2]float64) *report.Results {
	get := &report.Scenario{Name: "transfer"}
	post := &report.Scenario{Name: "upload"}
	for p, v := range pairsP50 {
		get.Add(report.Run{Pair: p, Values: map[string]float64{"p50": v[0]}})
		post.Add(report.Run{Pair: p, Values: map[string]float64{"p50": v[1]}})
	}
	get.Finish()
	post.Finish()
	return &report.Results{Scenarios: []*report.Scenario{get, post}}
}

func TestTransferTargets(t *testing.T) {
	o := wanOpts{rtt: 50 * time.Millisecond, connectInterval: time.Second, lossModel: lossBernoulli}
	res := wanResults(map[string][2]float64{"ptproxy": {280, 310}, "nginx": {200, 200}})
	verdicts := map[string]string{}
	for _, tg := range wanTargets(res, o, 0.01) {
		verdicts[tg.Goal] = tg.Verdict
	}
	if v := verdicts["1 MiB GET at 1% loss ≤ 1.5 × nginx pair's (median transfer time)"]; v != "met" {
		t.Errorf("GET 1.4× at 1%%: %q (%v)", v, verdicts)
	}
	if v := verdicts["1 MiB POST at 1% loss ≤ 1.5 × nginx pair's (median transfer time)"]; v != "missed" {
		t.Errorf("POST 1.55× at 1%%: %q (%v)", v, verdicts)
	}
	// 3%: 2×; GE runs name their model; no target at 0%.
	o.lossModel, o.geBurst = lossGE, 4
	for _, tg := range wanTargets(res, o, 0.03) {
		if strings.HasPrefix(tg.Goal, "1 MiB POST") && (tg.Verdict != "met" || !strings.Contains(tg.Goal, "3% (Gilbert–Elliott, mean burst 4 packets) loss ≤ 2 ×")) {
			t.Errorf("3%% GE: %+v", tg)
		}
	}
	for _, tg := range wanTargets(res, o, 0) {
		if strings.HasPrefix(tg.Goal, "1 MiB") {
			t.Errorf("target at 0%% loss: %+v", tg)
		}
	}
	// Without nginx there is nothing to compare with.
	res = wanResults(map[string][2]float64{"ptproxy": {280, 310}})
	for _, tg := range wanTargets(res, o, 0.01) {
		if strings.HasPrefix(tg.Goal, "1 MiB") && tg.Verdict != "n/a" {
			t.Errorf("without nginx: %+v", tg)
		}
	}
}

func TestIdleTarget(t *testing.T) {
	o := idleOpts{conns: 1000, inflight: 100}
	sc := func(client, server float64) *report.Scenario {
		s := &report.Scenario{Name: "idle"}
		s.Add(report.Run{Pair: "ptproxy", Values: map[string]float64{"rss_client_mib": client, "rss_server_mib": server}})
		s.Add(report.Run{Pair: "nginx", Values: map[string]float64{"rss_client_mib": 20, "rss_server_mib": 19}})
		s.Finish()
		return s
	}
	// 50 MB = 47.68 MiB: the larger side decides.
	for _, c := range []struct {
		client, server float64
		want           string
	}{{30, 47.6, "met"}, {47.7, 20, "missed"}, {60, 26, "missed"}, {math.NaN(), 20, "n/a"}} {
		if got := idleTarget(sc(c.client, c.server), o); got.Verdict != c.want {
			t.Errorf("client %v server %v: %q, want %q (%s)", c.client, c.server, got.Verdict, c.want, got.Measured)
		}
	}
	if got := idleTarget(sc(10, 10), idleOpts{conns: 100, inflight: 100}); got.Verdict != "n/a" {
		t.Errorf("fewer idle callers than the target's: %q", got.Verdict)
	}
}

func TestRSSSampler(t *testing.T) {
	s := newRSSSampler(time.Millisecond, []int{os.Getpid()}, []int{os.Getpid(), 1 << 30})
	s.start()
	time.Sleep(20 * time.Millisecond)
	rss, n := s.stop()
	if n < 1 || len(rss) != 2 || rss[0] <= 0 || rss[1] < rss[0] {
		t.Fatalf("samples %d, max %v", n, rss)
	}
	// Stopped without a start: one sample still.
	rss, n = newRSSSampler(time.Second, []int{os.Getpid()}).stop()
	if n != 1 || rss[0] <= 0 {
		t.Fatalf("no start: %d samples, %v", n, rss)
	}
}

// The raised limit is what the harness's children get.
func TestFileLimitInherited(t *testing.T) {
	lim, err := raiseFileLimit(1024)
	if lim < 1024 {
		t.Skipf("open-file limit %d: %v", lim, err)
	}
	out, err := exec.Command("sh", "-c", "ulimit -n").Output()
	if err != nil {
		t.Skip("no sh")
	}
	if got := strings.TrimSpace(string(out)); got != strconv.FormatUint(lim, 10) {
		t.Fatalf("child's limit %s, harness's %d", got, lim)
	}
}

// --alt-commit builds ptproxy as of a commit, from an export of it (the
// repository is left as it is), and names the commit; a name that is not
// a commit is refused with the flag in the error.
func TestBuildAtCommit(t *testing.T) {
	root, err := repoRoot("")
	if err == nil {
		_, err = exec.Command("git", "-C", root, "rev-parse", "HEAD").Output()
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no git repository here: %v", err)
		}
		t.Skipf("needs the git repository (apt-get install git): %v", err)
	}
	work := t.TempDir()
	if _, _, err := buildAt(root, "no-such-revision", work); err == nil || !strings.Contains(err.Error(), "--alt-commit") {
		t.Fatalf("a bad revision gave %v", err)
	}
	bin, commit, err := buildAt(root, "HEAD", work)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := exec.Command("git", "-C", root, "rev-parse", "--short", "HEAD").Output()
	if commit != strings.TrimSpace(string(want)) {
		t.Errorf("commit %q, want %q", commit, strings.TrimSpace(string(want)))
	}
	if out, err := exec.Command(bin, "--help").CombinedOutput(); err != nil || !strings.Contains(string(out), "point-to-point HTTP/1.1 reverse proxy") {
		t.Errorf("the binary built is not ptproxy: %v\n%s", err, out)
	}
}
