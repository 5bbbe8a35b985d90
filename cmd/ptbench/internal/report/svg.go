package report

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// Bar is one bar of a chart.
type Bar struct {
	Label string
	Value float64
}

var palette = map[string]string{
	"direct": "#7f7f7f", "ptproxy": "#d62728", "nginx": "#2ca02c", "caddy": "#1f77b4", "haproxy": "#9467bd", "ptproxy-alt": "#ff7f0e",
}

// BarChart renders a horizontal bar chart as a standalone SVG document.
func BarChart(title string, bars []Bar, unit string) string {
	const (
		width   = 640
		left    = 90
		right   = 90
		top     = 40
		rowH    = 30
		barH    = 20
		bottom  = 30
		fontCSS = "font-family:sans-serif;font-size:12px"
	)
	height := top + rowH*len(bars) + bottom
	maxV := 0.0
	for _, b := range bars {
		if !math.IsNaN(b.Value) && b.Value > maxV {
			maxV = b.Value
		}
	}
	if maxV == 0 {
		maxV = 1
	}
	plotW := float64(width - left - right)
	var s strings.Builder
	fmt.Fprintf(&s, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" style="%s">`+"\n", width, height, width, height, fontCSS)
	fmt.Fprintf(&s, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&s, `<text x="%d" y="22" style="font-size:13px;font-weight:bold">%s</text>`+"\n", 10, html.EscapeString(title))
	for i, b := range bars {
		y := top + i*rowH
		w := 0.0
		if !math.IsNaN(b.Value) && b.Value > 0 {
			w = b.Value / maxV * plotW
		}
		color := palette[b.Label]
		if color == "" {
			color = "#8c564b"
		}
		fmt.Fprintf(&s, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", left-8, y+barH-5, html.EscapeString(b.Label))
		fmt.Fprintf(&s, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", left, y, w, barH, color)
		fmt.Fprintf(&s, `<text x="%.1f" y="%d">%s %s</text>`+"\n", float64(left)+w+5, y+barH-5, Fmt(b.Value), html.EscapeString(unit))
	}
	fmt.Fprintf(&s, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", left, top-4, left, top+rowH*len(bars))
	s.WriteString("</svg>\n")
	return s.String()
}
