package report

import (
	"encoding/json"
	"encoding/xml"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func sample() *Results {
	s := &Scenario{Name: "rps", Title: "Throughput", Method: "GET /small at 64.",
		Metrics: []Metric{{Key: "rps", Label: "req/s", Unit: "req/s", Plot: true}, {Key: "cpu", Label: "CPU", Unit: "µs/req", LowerBetter: true}}}
	for rep := 1; rep <= 3; rep++ {
		s.Add(Run{Pair: "direct", Rep: rep, Values: map[string]float64{"rps": 40000 + float64(rep)*1000}})
		s.Add(Run{Pair: "ptproxy", Rep: rep, Values: map[string]float64{"rps": 8000 + float64(rep), "cpu": 100 * float64(rep)}})
		s.Add(Run{Pair: "caddy", Rep: rep, Values: map[string]float64{"rps": 4000, "cpu": 300}})
	}
	s.Add(Run{Pair: "caddy", Rep: 4, Err: "boom"})
	s.Finish()
	return &Results{Title: "T", Reps: 3, Pairs: []string{"direct", "ptproxy", "nginx", "caddy"}, Scenarios: []*Scenario{s},
		Host: map[string]string{"cpus": "2"}, Commands: map[string]string{"ptproxy client": "ptproxy -c c.toml"}, Invoked: "ptbench loopback"}
}

func TestMediansAndMarkdown(t *testing.T) {
	r := sample()
	s := r.Find("rps")
	if s.Get("direct", "rps") != 42000 || s.Get("ptproxy", "cpu") != 200 || !math.IsNaN(s.Get("nginx", "rps")) {
		t.Fatalf("medians %v", s.Median)
	}
	md := r.Markdown(map[string][]string{"rps": {"plots/x.svg"}})
	for _, want := range []string{"8002 (0.19× direct)", "| req/s | 2.00× |", "| CPU | 0.67× |", "caddy rep 4: boom", "![Throughput](plots/x.svg)", "ptproxy -c c.toml"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	if err := sample().Write(dir, "results-x"); err != nil {
		t.Fatal(err)
	}
	var back Results
	b, err := os.ReadFile(filepath.Join(dir, "results-x.json"))
	if err != nil || json.Unmarshal(b, &back) != nil || back.Scenarios[0].Median["caddy"]["rps"] != 4000 {
		t.Fatalf("json: %v", err)
	}
	svg, err := os.ReadFile(filepath.Join(dir, "plots", "results-x-rps-rps.svg"))
	if err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(strings.NewReader(string(svg)))
	for {
		if _, err := d.Token(); err != nil {
			if err.Error() != "EOF" {
				t.Fatalf("svg is not well-formed XML: %v", err)
			}
			break
		}
	}
	if !strings.Contains(string(svg), ">ptproxy<") {
		t.Fatal("svg lacks a label")
	}
}

func TestFmt(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 1.234: "1.23", 12.34: "12.3", 123.4: "123", 47123: "47123", 250000: "250k", math.NaN(): "–"} {
		if got := Fmt(v); got != want {
			t.Errorf("Fmt(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestLineChart(t *testing.T) {
	svg := LineChart("GET <1 MiB> & loss", "loss (%)", "ms", []Series{
		{Label: "ptproxy fec-on", Points: []Point{{0, 157}, {1, 173}, {3, 1235}}},
		{Label: "nginx", Points: []Point{{0, 143}, {1, math.NaN()}}},
		{Label: "one point", Points: []Point{{3, 200}}, Color: "#123456", Dash: "4 4"},
	})
	d := xml.NewDecoder(strings.NewReader(svg))
	polylines, circles := 0, 0
	for {
		tok, err := d.Token()
		if err != nil {
			if err.Error() != "EOF" {
				t.Fatalf("svg is not well-formed XML: %v", err)
			}
			break
		}
		if se, ok := tok.(xml.StartElement); ok {
			switch se.Name.Local {
			case "polyline":
				polylines++
			case "circle":
				circles++
			}
		}
	}
	// A line needs two points; NaN points are left out.
	if polylines != 1 || circles != 5 {
		t.Fatalf("%d polylines, %d points", polylines, circles)
	}
	for _, w := range []string{`stroke="#d62728"`, `stroke="#2ca02c"`, `stroke="#123456"`, `stroke-dasharray="4 4"`, ">ptproxy fec-on<", "GET &lt;1 MiB&gt; &amp; loss"} {
		if !strings.Contains(svg, w) {
			t.Errorf("svg lacks %q", w)
		}
	}
}

func TestNiceStepAndTick(t *testing.T) {
	for _, c := range []struct{ max, want float64 }{{4144, 1000}, {3, 1}, {2, 0.5}, {0, 1}, {100, 20}} {
		if got := niceStep(c.max, 5); got != c.want {
			t.Errorf("niceStep(%v) = %v, want %v", c.max, got, c.want)
		}
	}
	if tick(1.0000000001) != "1" || tick(0.5) != "0.5" || tick(2000) != "2000" {
		t.Error("tick formatting")
	}
}
