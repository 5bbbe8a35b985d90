package report

import (
	"fmt"
	"html"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Point is one point of a line.
type Point struct{ X, Y float64 }

// Series is one line of a line chart; Color, when empty, comes from the
// palette by the label's first word (the pair), and Dash (an SVG
// stroke-dasharray) tells apart lines of the same pair.
type Series struct {
	Label  string
	Points []Point // drawn in the order given
	Color  string
	Dash   string
}

// tick formats an axis value without trailing zeros (0.5, 1, 2000).
func tick(v float64) string {
	return strconv.FormatFloat(math.Round(v*1e6)/1e6, 'f', -1, 64)
}

// niceStep returns a round tick step (1, 2 or 5 × 10^k) giving about n
// ticks up to max.
func niceStep(max float64, n int) float64 {
	if max <= 0 || math.IsNaN(max) || math.IsInf(max, 0) {
		return 1
	}
	raw := max / float64(n)
	pow := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if raw <= m*pow {
			return m * pow
		}
	}
	return 10 * pow
}

// LineChart renders series as a standalone SVG line chart with linear
// axes from zero, ticks, grid lines and a legend.
func LineChart(title, xLabel, yLabel string, series []Series) string {
	const (
		plotArea = 500
		height   = 420
		left     = 70
		top      = 40
		bottom   = 50
		fontCSS  = "font-family:sans-serif;font-size:12px"
	)
	// The legend is as wide as its longest label (about 7 px a character
	// at 12 px), at least 190 px.
	right := 190
	for _, sr := range series {
		right = max(right, 45+7*utf8.RuneCountInString(sr.Label))
	}
	width := left + plotArea + right
	maxX, maxY := 0.0, 0.0
	for _, s := range series {
		for _, p := range s.Points {
			if !math.IsNaN(p.X) && p.X > maxX {
				maxX = p.X
			}
			if !math.IsNaN(p.Y) && p.Y > maxY {
				maxY = p.Y
			}
		}
	}
	xStep, yStep := niceStep(maxX, 5), niceStep(maxY, 6)
	xMax := math.Max(xStep, math.Ceil(maxX/xStep-1e-9)*xStep)
	yMax := math.Max(yStep, math.Ceil(maxY/yStep-1e-9)*yStep)
	plotW, plotH := float64(width-left-right), float64(height-top-bottom)
	px := func(x float64) float64 { return float64(left) + x/xMax*plotW }
	py := func(y float64) float64 { return float64(top) + plotH - y/yMax*plotH }

	var s strings.Builder
	fmt.Fprintf(&s, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" style="%s">`+"\n", width, height, width, height, fontCSS)
	s.WriteString(`<rect width="100%" height="100%" fill="white"/>` + "\n")
	fmt.Fprintf(&s, `<text x="10" y="22" style="font-size:13px;font-weight:bold">%s</text>`+"\n", html.EscapeString(title))
	// Grid, ticks and labels.
	for y := 0.0; y <= yMax+yStep/2; y += yStep {
		fmt.Fprintf(&s, `<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e0e0e0"/>`+"\n", left, py(y), px(xMax), py(y))
		fmt.Fprintf(&s, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", left-6, py(y)+4, tick(y))
	}
	for x := 0.0; x <= xMax+xStep/2; x += xStep {
		fmt.Fprintf(&s, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%.1f" stroke="#e0e0e0"/>`+"\n", px(x), top, px(x), py(0))
		fmt.Fprintf(&s, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", px(x), py(0)+16, tick(x))
	}
	fmt.Fprintf(&s, `<line x1="%d" y1="%d" x2="%d" y2="%.1f" stroke="black"/>`+"\n", left, top, left, py(0))
	fmt.Fprintf(&s, `<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black"/>`+"\n", left, py(0), px(xMax), py(0))
	fmt.Fprintf(&s, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", px(xMax/2), height-12, html.EscapeString(xLabel))
	fmt.Fprintf(&s, `<text x="16" y="%.1f" text-anchor="middle" transform="rotate(-90 16 %.1f)">%s</text>`+"\n", py(yMax/2), py(yMax/2), html.EscapeString(yLabel))
	// Lines, points and legend.
	for i, sr := range series {
		color := sr.Color
		if color == "" {
			first, _, _ := strings.Cut(sr.Label, " ")
			if color = palette[first]; color == "" {
				color = "#8c564b"
			}
		}
		dash := ""
		if sr.Dash != "" {
			dash = fmt.Sprintf(` stroke-dasharray="%s"`, sr.Dash)
		}
		var pts []string
		for _, p := range sr.Points {
			if math.IsNaN(p.X) || math.IsNaN(p.Y) {
				continue
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(p.X), py(p.Y)))
		}
		if len(pts) > 1 {
			fmt.Fprintf(&s, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"%s/>`+"\n", strings.Join(pts, " "), color, dash)
		}
		for _, p := range sr.Points {
			if math.IsNaN(p.X) || math.IsNaN(p.Y) {
				continue
			}
			fmt.Fprintf(&s, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"><title>%s: %s at %s</title></circle>`+"\n",
				px(p.X), py(p.Y), color, html.EscapeString(sr.Label), Fmt(p.Y), Fmt(p.X))
		}
		ly := top + 10 + i*20
		lx := width - right + 15
		fmt.Fprintf(&s, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"%s/>`+"\n", lx, ly, lx+24, ly, color, dash)
		fmt.Fprintf(&s, `<text x="%d" y="%d">%s</text>`+"\n", lx+30, ly+4, html.EscapeString(sr.Label))
	}
	s.WriteString("</svg>\n")
	return s.String()
}
