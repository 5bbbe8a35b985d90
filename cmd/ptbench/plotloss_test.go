package main

import (
	"encoding/xml"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ptproxy/ptproxy/cmd/ptbench/internal/pairs"
	"github.com/ptproxy/ptproxy/cmd/ptbench/internal/report"
)

func loadFixtures(t *testing.T) []lossFile {
	t.Helper()
	names, _ := filepath.Glob("testdata/plotloss/*.json")
	var files []lossFile
	for _, n := range names {
		data, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parseLossFile(n, data)
		if strings.HasSuffix(n, "results-loopback.json") {
			if err == nil {
				t.Error("a loopback file was taken for a WAN one")
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	if len(files) != 5 {
		t.Fatalf("%d WAN fixtures", len(files))
	}
	return files
}

func TestParseLossFile(t *testing.T) {
	for _, f := range loadFixtures(t) {
		base := filepath.Base(f.name)
		want := map[string]struct {
			rtt   string
			loss  float64
			model string
			burst string
			tag   string
		}{
			"results-wan-50ms-loss0-fec-on.json":    {"50ms", 0, "bernoulli", "", "fec-on"},
			"results-wan-50ms-loss1-fec-on.json":    {"50ms", 0.01, "bernoulli", "", "fec-on"},
			"results-wan-50ms-loss1.json":           {"50ms", 0.01, "bernoulli", "", ""},
			"results-wan-50ms-loss0_5-ge4-exp.json": {"50ms", 0.005, "ge", "4", "exp"},
			"results-wan-20ms-loss1.json":           {"20ms", 0.01, "bernoulli", "", ""},
		}[base]
		if f.rtt != want.rtt || f.loss != want.loss || f.model != want.model || f.burst != want.burst || f.tag != want.tag {
			t.Errorf("%s: rtt %q loss %v model %q burst %q tag %q, want %+v", base, f.rtt, f.loss, f.model, f.burst, f.tag, want)
		}
	}
}

func TestLossSeries(t *testing.T) {
	files := loadFixtures(t)
	got := lossSeries(files, lossFilter{scenario: "transfer", metric: "p50", rtt: "50ms"})
	type line struct {
		label  string
		points []report.Point
	}
	var lines []line
	for _, s := range got {
		lines = append(lines, line{s.Label, s.Points})
	}
	want := []line{
		// ptproxy first, one line per tag and loss model; the others
		// merged across files (nginx at 1%: median of 194 and 190).
		{"ptproxy", []report.Point{{X: 1, Y: 2794}}},
		{"ptproxy exp (GE, burst 4)", []report.Point{{X: 0.5, Y: 900}}},
		{"ptproxy fec-on", []report.Point{{X: 0, Y: 157}, {X: 1, Y: 173}}},
		{"direct", []report.Point{{X: 1, Y: 194}}},
		{"nginx", []report.Point{{X: 0, Y: 143}, {X: 1, Y: 192}}},
		{"nginx (GE, burst 4)", []report.Point{{X: 0.5, Y: 150}}},
		{"caddy", []report.Point{{X: 1, Y: 2251}}},
	}
	if !reflect.DeepEqual(lines, want) {
		t.Fatalf("series:\n got %+v\nwant %+v", lines, want)
	}
	// Filters: tags select ptproxy's lines only ("-" is untagged), pairs
	// select pairs, another RTT other files.
	got = lossSeries(files, lossFilter{scenario: "transfer", metric: "p50", rtt: "50ms", tags: splitSet("-"), pairs: splitSet("ptproxy,nginx")})
	var labels []string
	for _, s := range got {
		labels = append(labels, s.Label)
	}
	if strings.Join(labels, "|") != "ptproxy|nginx|nginx (GE, burst 4)" {
		t.Fatalf("filtered labels %q", labels)
	}
	got = lossSeries(files, lossFilter{scenario: "transfer", metric: "p50", rtt: "20ms"})
	if len(got) != 1 || got[0].Label != "nginx" || got[0].Points[0] != (report.Point{X: 1, Y: 99}) {
		t.Fatalf("20ms: %+v", got)
	}
	got = lossSeries(files, lossFilter{scenario: "upload", metric: "p50", rtt: "50ms"})
	if len(got) != 2 {
		t.Fatalf("upload: %+v", got)
	}
	got = lossSeries(files, lossFilter{scenario: "transfer", metric: "wire_mib", rtt: "50ms", pairs: splitSet("ptproxy")})
	if len(got) != 1 || got[0].Points[0].Y != 1.22 {
		t.Fatalf("wire_mib: %+v", got)
	}
	table := lossTable(lossSeries(files, lossFilter{scenario: "transfer", metric: "p50", rtt: "50ms"}), "ms")
	for _, w := range []string{"| line | 0% loss (ms) | 0.5% loss (ms) | 1% loss (ms) |", "| ptproxy fec-on | 157 | – | 173 |", "| nginx | 143 | – | 192 |"} {
		if !strings.Contains(table, w) {
			t.Errorf("table lacks %q:\n%s", w, table)
		}
	}
}

func TestPlotLossWritesSVG(t *testing.T) {
	out := filepath.Join(t.TempDir(), "plots", "loss.svg")
	names, _ := filepath.Glob("testdata/plotloss/*.json")
	var table strings.Builder
	if err := runPlotLoss(append([]string{"--out", out}, names...), &table); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table.String(), "| ptproxy fec-on | 157 | – | 173 |") {
		t.Errorf("table:\n%s", table.String())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(strings.NewReader(string(b)))
	for {
		if _, err := d.Token(); err != nil {
			if err.Error() != "EOF" {
				t.Fatalf("not well-formed: %v", err)
			}
			break
		}
	}
	for _, w := range []string{">ptproxy fec-on<", ">nginx<", "<polyline", "1 MiB GET"} {
		if !strings.Contains(string(b), w) {
			t.Errorf("svg lacks %q", w)
		}
	}
}

// In a run with the ptproxy-alt pair, its line is named by the setting it
// ran with (read from the run's note) and ptproxy's by "defaults"; a tag
// still tells runs apart.
func TestAltSeriesLabel(t *testing.T) {
	b := &bench{env: pairs.Env{PtproxyAltEnv: []string{"PTPROXY_TRANSPORT__FEC=auto", "GOMAXPROCS=1"}}}
	f := lossFile{tag: "x", res: report.Results{Notes: append([]string{"other"}, b.experimentNotes([]string{"ptproxy-alt"})...)}}
	for pair, want := range map[string]string{
		"ptproxy-alt": "ptproxy fec=auto gomaxprocs=1 x",
		"ptproxy":     "ptproxy defaults x",
		"nginx":       "nginx",
	} {
		if got := seriesLabel(f, pair); got != want {
			t.Errorf("%s: label %q, want %q", pair, got, want)
		}
	}
	if got := seriesLabel(lossFile{}, "ptproxy-alt"); got != "ptproxy-alt" {
		t.Errorf("without the note: %q", got)
	}
	if got := seriesLabel(lossFile{tag: "x"}, "ptproxy"); got != "ptproxy x" {
		t.Errorf("ptproxy alone: %q", got)
	}
}
