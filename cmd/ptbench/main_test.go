package main

import "testing"

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
