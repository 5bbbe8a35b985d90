package config

import (
	"strings"
	"testing"
)

func TestCheckHostname(t *testing.T) {
	valid := []string{
		"bar.example.org", "localhost", "bar.example.org.", "a-b.c_d.example", "xn--bcher-kva.example",
		"127.0.0.1", "::1", "2001:db8::1", "::ffff:192.0.2.1", "a1", strings.Repeat("a", 63) + ".org",
	}
	invalid := []string{
		"", ".", "bar..example.org", ".bar", "-bar.org", "bar-.org", "bar example", "bar:443",
		"[::1]", "fe80::1%eth0", "1.2.3", "300.1.1.1", "10.0.0.2.", "bücher.example", strings.Repeat("a", 64) + ".org",
		strings.Repeat("a.", 127) + "ab",
	}
	for _, s := range valid {
		if p := checkHostname(s); p != "" {
			t.Errorf("checkHostname(%q) = %q, want valid", s, p)
		}
	}
	for _, s := range invalid {
		if checkHostname(s) == "" {
			t.Errorf("checkHostname(%q) accepted", s)
		}
	}
}

func TestCheckHostPort(t *testing.T) {
	valid := []string{"127.0.0.1:20080", "[::]:20080", "localhost:0", ":8080", "[::1]:1", "host:65535"}
	invalid := []string{"127.0.0.1", "::1:80", "[::1]", "host:http", "host:65536", "host:-1", "bad host:1", ""}
	for _, s := range valid {
		if p := checkHostPort(s, true); p != "" {
			t.Errorf("checkHostPort(%q) = %q, want valid", s, p)
		}
	}
	for _, s := range invalid {
		if checkHostPort(s, true) == "" {
			t.Errorf("checkHostPort(%q) accepted", s)
		}
	}
	if checkHostPort("h:0", false) == "" {
		t.Error("port 0 accepted without zeroPort")
	}
}

func TestCheckConnectAddress(t *testing.T) {
	valid := []string{"localhost:8081", "origin", "127.0.0.1:80", "[::1]:8081", "origin.internal:1"}
	invalid := []string{
		"http://localhost:8081", "localhost:8081/api", "user@localhost:80", "localhost:8081?x", "localhost:8081#f",
		"a b:80", "localhost:port", "localhost:0", "localhost:70000", ":8081", "", "[::1",
	}
	for _, s := range valid {
		if p := checkConnectAddress(s); p != "" {
			t.Errorf("checkConnectAddress(%q) = %q, want valid", s, p)
		}
	}
	for _, s := range invalid {
		if checkConnectAddress(s) == "" {
			t.Errorf("checkConnectAddress(%q) accepted", s)
		}
	}
}

func TestEditDistance(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		d    int
	}{{"", "", 0}, {"abc", "abc", 0}, {"peer_hostnme", "peer_hostname", 1}, {"kitten", "sitting", 3}, {"", "ab", 2}} {
		if got := editDistance(tt.a, tt.b); got != tt.d {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.d)
		}
	}
}
