package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/ptproxy/ptproxy/cmd/ptbench/internal/pairs"
	"github.com/ptproxy/ptproxy/cmd/ptbench/internal/report"
	"github.com/ptproxy/ptproxy/cmd/ptbench/internal/stats"
)

// lossFile is one results-wan-*.json file with the settings the plot
// needs: from its params when it has them (files written since the params
// exist), else from its title and file name.
type lossFile struct {
	name  string
	rtt   string
	loss  float64 // fraction
	model string  // "bernoulli" or "ge"
	burst string  // mean burst of the ge model
	tag   string
	res   report.Results
}

var (
	wanFileName = regexp.MustCompile(`^results-wan-([0-9.]+[a-zµ]+)-loss([0-9_]+)(?:-ge([0-9_]+))?(?:-(.+))?$`)
	titleLoss   = regexp.MustCompile(`loss ([0-9.]+)%`)
)

func parseLossFile(name string, data []byte) (lossFile, error) {
	f := lossFile{name: name, model: lossBernoulli}
	if err := json.Unmarshal(data, &f.res); err != nil {
		return f, fmt.Errorf("%s: %v", name, err)
	}
	if f.res.Mode != "wan" {
		return f, fmt.Errorf("%s: not a WAN results file (mode %q)", name, f.res.Mode)
	}
	base := strings.TrimSuffix(filepath.Base(name), ".json")
	lossSet := false
	if m := wanFileName.FindStringSubmatch(base); m != nil {
		f.rtt, f.tag = m[1], m[4]
		if m[3] != "" {
			f.model, f.burst = lossGE, strings.ReplaceAll(m[3], "_", ".")
		}
		if v, err := strconv.ParseFloat(strings.ReplaceAll(m[2], "_", "."), 64); err == nil {
			f.loss, lossSet = v/100, true
		}
	}
	if m := titleLoss.FindStringSubmatch(f.res.Title); m != nil {
		if v, err := strconv.ParseFloat(m[1], 64); err == nil {
			f.loss, lossSet = v/100, true
		}
	}
	if p := f.res.Params; p != nil {
		if v, err := strconv.ParseFloat(p["loss"], 64); err == nil {
			f.loss, lossSet = v, true
		}
		if p["rtt"] != "" {
			f.rtt = p["rtt"]
		}
		if p["loss_model"] != "" {
			f.model = p["loss_model"]
		}
		f.burst = p["ge_burst"]
		if _, ok := p["tag"]; ok {
			f.tag = p["tag"]
		}
	}
	if !lossSet {
		return f, fmt.Errorf("%s: no loss rate in its name, title or params", name)
	}
	return f, nil
}

// lossFilter selects what lossSeries draws.
type lossFilter struct {
	scenario, metric, rtt string
	pairs                 map[string]bool // empty: every pair
	tags                  map[string]bool // ptproxy's tags ("" = untagged); empty: every tag
}

// seriesLabel names the line a pair of a file belongs to. A tag describes
// an experiment on ptproxy (--ptproxy-env), so ptproxy gets one line per
// tag, and every other pair one line for all files (the median where
// several files measured it at the same loss rate). A loss model other
// than Bernoulli gets lines of its own.
func seriesLabel(f lossFile, pair string) string {
	l := pair
	// In a run with both ptproxy pairs, each is named by its setting.
	if env := altSetting(f.res.Notes); env != "" {
		switch pair {
		case pairs.PtproxyAlt:
			l = "ptproxy " + env
		case pairs.Ptproxy:
			l = "ptproxy defaults"
		}
	}
	if pairs.IsPtproxy(pair) && f.tag != "" {
		l += " " + f.tag
	}
	if f.model == lossGE {
		l += " (GE, burst " + f.burst + ")"
	}
	return l
}

// lossSeries extracts, for every line, the metric's median at each loss
// rate, sorted by loss rate; ptproxy's lines first, then the other pairs in
// the harness's order.
func lossSeries(files []lossFile, flt lossFilter) []report.Series {
	vals := map[string]map[float64][]float64{}
	pairOf := map[string]string{}
	for _, f := range files {
		if flt.rtt != "" && f.rtt != flt.rtt {
			continue
		}
		var sc *report.Scenario
		for _, s := range f.res.Scenarios {
			if s.Name == flt.scenario {
				sc = s
			}
		}
		if sc == nil {
			continue
		}
		for pair, m := range sc.Median {
			if len(flt.pairs) > 0 && !flt.pairs[pair] {
				continue
			}
			if pairs.IsPtproxy(pair) && len(flt.tags) > 0 && !flt.tags[f.tag] {
				continue
			}
			v, ok := m[flt.metric]
			if !ok || math.IsNaN(v) {
				continue
			}
			l := seriesLabel(f, pair)
			if vals[l] == nil {
				vals[l] = map[float64][]float64{}
			}
			vals[l][f.loss] = append(vals[l][f.loss], v)
			pairOf[l] = pair
		}
	}
	rank := func(l string) int {
		if i := slices.Index(pairs.All, pairOf[l]); i >= 0 {
			if pairs.IsPtproxy(pairOf[l]) {
				return -1
			}
			return i
		}
		return len(pairs.All)
	}
	var labels []string
	for l := range vals {
		labels = append(labels, l)
	}
	slices.SortFunc(labels, func(a, b string) int {
		if ra, rb := rank(a), rank(b); ra != rb {
			return ra - rb
		}
		return strings.Compare(a, b)
	})
	dashes := []string{"", "7 4", "2 3", "10 3 2 3", "4 4"}
	// ptproxy's lines: red for the first, then other warm colours.
	variants := []string{"", "#ff7f0e", "#e377c2", "#8c564b", "#bcbd22"}
	used := map[string]int{}
	var out []report.Series
	for _, l := range labels {
		s := report.Series{Label: l}
		for loss, vs := range vals[l] {
			s.Points = append(s.Points, report.Point{X: loss * 100, Y: stats.Median(vs)})
		}
		slices.SortFunc(s.Points, func(a, b report.Point) int {
			switch {
			case a.X < b.X:
				return -1
			case a.X > b.X:
				return 1
			}
			return 0
		})
		// Both ptproxy pairs share one sequence of colours, so every
		// ptproxy line differs from the others.
		key := pairOf[l]
		if pairs.IsPtproxy(key) {
			key = pairs.Ptproxy
		}
		n := used[key]
		s.Dash = dashes[n%len(dashes)]
		if key == pairs.Ptproxy {
			s.Color = variants[n%len(variants)]
		}
		used[key]++
		out = append(out, s)
	}
	return out
}

// lossTable renders the series as a Markdown table, one column per loss
// rate.
func lossTable(series []report.Series, unit string) string {
	var xs []float64
	for _, s := range series {
		for _, p := range s.Points {
			if !slices.Contains(xs, p.X) {
				xs = append(xs, p.X)
			}
		}
	}
	slices.Sort(xs)
	var b strings.Builder
	b.WriteString("| line |")
	for _, x := range xs {
		fmt.Fprintf(&b, " %s%% loss (%s) |", strconv.FormatFloat(x, 'g', -1, 64), unit)
	}
	b.WriteString("\n|---|" + strings.Repeat("---:|", len(xs)) + "\n")
	for _, s := range series {
		fmt.Fprintf(&b, "| %s |", s.Label)
		for _, x := range xs {
			cell := "–"
			for _, p := range s.Points {
				if p.X == x {
					cell = report.Fmt(p.Y)
				}
			}
			fmt.Fprintf(&b, " %s |", cell)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func splitSet(s string) map[string]bool {
	m := map[string]bool{}
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			if v == "-" {
				v = ""
			}
			m[v] = true
		}
	}
	return m
}

func runPlotLoss(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("ptbench plot-loss", flag.ExitOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: ptbench plot-loss [flags] [results-wan-*.json ...]

Draws one SVG line plot of the 1 MiB transfer time against the loss rate,
one line per pair (ptproxy: one per results tag, e.g. fec-on), from WAN
results files (default: every docs/benchmarks/results-wan-*.json), and
prints the plotted medians as a Markdown table.

`)
		fs.PrintDefaults()
	}
	out := fs.String("out", "", "SVG file to write (default: <repo>/docs/benchmarks/plots/loss-1m.svg; loss-1m-{get,post}-<metric>.svg for another scenario or metric)")
	scenario := fs.String("scenario", "transfer", "scenario to plot: transfer (1 MiB GET) or upload (1 MiB POST)")
	metric := fs.String("metric", "p50", "metric of the scenario (p50 = median transfer time; wire_mib = bytes on the link)")
	rtt := fs.String("rtt", "50ms", "only files of this RTT (empty: all)")
	pairsF := fs.String("pairs", "", "only these pairs, comma-separated (default: all)")
	tags := fs.String("tags", "", "only ptproxy lines of these results tags, comma-separated, '-' for untagged (default: all)")
	repo := fs.String("repo", "", "ptproxy repository root (default: from `go env GOMOD`)")
	fs.Parse(args)
	files := fs.Args()
	if len(files) == 0 || *out == "" {
		root, err := repoRoot(*repo)
		if err != nil {
			return err
		}
		if len(files) == 0 {
			files, _ = filepath.Glob(filepath.Join(root, "docs", "benchmarks", "results-wan-*.json"))
		}
		if *out == "" {
			name := "loss-1m.svg"
			if *scenario != "transfer" || *metric != "p50" {
				short := map[string]string{"transfer": "get", "upload": "post"}[*scenario]
				if short == "" {
					short = *scenario
				}
				name = fmt.Sprintf("loss-1m-%s-%s.svg", short, *metric)
			}
			*out = filepath.Join(root, "docs", "benchmarks", "plots", name)
		}
	}
	if len(files) == 0 {
		return fmt.Errorf("no results-wan-*.json files")
	}
	var parsed []lossFile
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			return err
		}
		f, err := parseLossFile(name, data)
		if err != nil {
			fmt.Fprintln(os.Stderr, "skipped:", err)
			continue
		}
		parsed = append(parsed, f)
	}
	series := lossSeries(parsed, lossFilter{scenario: *scenario, metric: *metric, rtt: *rtt, pairs: splitSet(*pairsF), tags: splitSet(*tags)})
	if len(series) == 0 {
		return fmt.Errorf("no %s/%s values in %d files (RTT %q)", *scenario, *metric, len(parsed), *rtt)
	}
	what := map[string]string{"transfer": "1 MiB GET", "upload": "1 MiB POST"}[*scenario]
	if what == "" {
		what = *scenario
	}
	unit, ylabel := "ms", "median transfer time (ms)"
	if *metric != "p50" {
		unit, ylabel = "", *metric
		for _, f := range parsed {
			for _, s := range f.res.Scenarios {
				for _, m := range s.Metrics {
					if s.Name == *scenario && m.Key == *metric {
						unit, ylabel = m.Unit, m.Label+" ("+m.Unit+")"
					}
				}
			}
		}
	}
	title := fmt.Sprintf("%s against loss rate, RTT %s (lower is better)", what, *rtt)
	svg := report.LineChart(title, "loss rate each way (%)", ylabel, series)
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(*out, []byte(svg), 0o644); err != nil {
		return err
	}
	fmt.Fprint(stdout, lossTable(series, unit))
	fmt.Fprintf(os.Stderr, "wrote %s from %d files\n", *out, len(parsed))
	return nil
}

// altSetting reads what the ptproxy-alt pair of a run had in its
// environment from the run's notes (experimentNotes), shortened:
// "PTPROXY_TRANSPORT__FEC=auto" becomes "fec=auto".
func altSetting(notes []string) string {
	prefix := "Pair " + pairs.PtproxyAlt + " is ptproxy with "
	for _, n := range notes {
		rest, ok := strings.CutPrefix(n, prefix)
		if !ok {
			continue
		}
		env, _, _ := strings.Cut(rest, " added to")
		var out []string
		for _, kv := range strings.Fields(env) {
			k, v, _ := strings.Cut(kv, "=")
			k = strings.TrimPrefix(k, "PTPROXY_")
			if _, after, ok := strings.Cut(k, "__"); ok {
				k = after
			}
			out = append(out, strings.ToLower(k)+"="+v)
		}
		return strings.Join(out, " ")
	}
	return ""
}
