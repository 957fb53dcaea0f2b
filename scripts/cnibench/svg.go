package main

import (
	"fmt"
	"math"
	"strings"
)

// Plot geometry, in SVG user units.
const (
	svgW, svgH         = 760, 440
	padL, padR         = 64, 180
	padT, padB         = 40, 56
	yTicks             = 5
	xTicks             = 5
	markerR            = 3.5
	strokeW            = 2
	fontSize           = 12
	titleSize          = 14
	legendRowH         = 22
	legendSwatchLength = 24
)

var seriesColors = map[string]string{sRefBridge: "#d62728", sMoorBridge: "#1f77b4", sFloor: "#2ca02c"}

// niceCeil rounds v up to a round step (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8) times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 || math.IsNaN(v) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

// growthSVG plots the median ADD latency of each tenth of the growth run against the
// number of containers already attached at the middle of that tenth.
func growthSVG(m *matrix) string {
	c := m.Cfgs[0]
	_, _, _, _, _, tenth := growthMetrics(c.N)
	type series struct {
		name string
		ys   []float64
	}
	var all []series
	ymax := 0.0
	for _, s := range m.Suites {
		if !m.ok(c, s) {
			continue
		}
		sr := series{name: s}
		for _, tm := range tenth {
			y := overRounds(m.cell(c, s), tm)
			sr.ys = append(sr.ys, y)
			if !math.IsNaN(y) {
				ymax = math.Max(ymax, y)
			}
		}
		all = append(all, sr)
	}
	ytop := niceCeil(ymax)
	plotW, plotH := float64(svgW-padL-padR), float64(svgH-padT-padB)
	xOf := func(ctrs float64) float64 { return padL + ctrs/float64(c.N)*plotW }
	yOf := func(v float64) float64 { return padT + plotH - v/ytop*plotH }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="%d">`+"\n", svgW, svgH, svgW, svgH, fontSize)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="%d">Median ADD latency per tenth of %d serial ADDs into one /16</text>`+"\n", padL, padT-16, titleSize, c.N)
	for i := 0; i <= yTicks; i++ {
		v := ytop * float64(i) / yTicks
		y := yOf(v)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", padL, y, padL+plotW, y)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>`+"\n", padL-6, y, trimNum(v))
	}
	for i := 0; i <= xTicks; i++ {
		v := float64(c.N) * float64(i) / xTicks
		x := xOf(v)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", x, padT, x, padT+plotH)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", x, padT+plotH+18, trimNum(v))
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.0f" height="%.0f" fill="none" stroke="#333"/>`+"\n", padL, padT, plotW, plotH)
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">containers already attached</text>`+"\n", padL+plotW/2, svgH-12)
	fmt.Fprintf(&b, `<text transform="translate(16,%.1f) rotate(-90)" text-anchor="middle">ADD latency, ms</text>`+"\n", padT+plotH/2)

	for i, s := range all {
		color := seriesColors[s.name]
		if color == "" {
			color = "#7f7f7f"
		}
		var pts []string
		for t, y := range s.ys {
			if math.IsNaN(y) {
				continue
			}
			x := xOf((float64(t) + 0.5) * float64(c.N) / tenths)
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, yOf(y)))
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="%.1f" fill="%s"><title>%s: %.2f ms</title></circle>`+"\n", x, yOf(y), markerR, color, s.name, y)
		}
		fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="%d"/>`+"\n", strings.Join(pts, " "), color, strokeW)
		ly := padT + 10 + i*legendRowH
		lx := float64(padL) + plotW + 14
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s" stroke-width="%d"/>`+"\n", lx, ly, lx+legendSwatchLength, ly, color, strokeW)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" dominant-baseline="middle">%s</text>`+"\n", lx+legendSwatchLength+6, ly, s.name)
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func trimNum(v float64) string {
	s := fmt.Sprintf("%.2f", v)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s
}
