package config

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// originalFields are the keys the original ptproxy (v1.2.0) knows; every
// other key must be documented as a ptproxy-go extension.
var originalFields = setOf(
	"general.mode",
	"general.peer_hostname",
	"general.quic_port",
	"general.bind_address",
	"general.connect_address",
	"general.http_bind_address",
	"general.http_connect_address",
	"tls.ca",
	"tls.skip_verify",
	"tls.cert",
	"tls.key",
	"transport.max_idle_timeout",
	"transport.keep_alive_interval",
	"transport.initial_rtt",
	"transport.max_concurrent_http_streams",
	"transport.stream_receive_window",
	"transport.initial_window",
	"transport.receive_window",
	"transport.send_window",
	"transport.socket_receive_buffer_size",
	"transport.socket_send_buffer_size",
	"transport.congestion_algorithm",
	"system.connect_interval",
	"system.tcp_nodelay",
	"system.wait_for_first_attempt",
	"system.watchdog_factor",
	"system.add_forwarded",
)

// noEffect are the keys quic-go cannot honour.
var noEffect = setOf(
	"transport.initial_rtt",
	"transport.initial_window",
	"transport.send_window",
	"transport.congestion_algorithm",
)

func setOf(keys ...string) map[string]bool {
	m := make(map[string]bool, len(keys))
	for _, k := range keys {
		m[k] = true
	}
	return m
}

type docRow struct{ typ, def, origin, meaning string }

var docRowRE = regexp.MustCompile("^\\| `([a-z_]+\\.[a-z_]+)` \\|([^|]*)\\|([^|]*)\\|([^|]*)\\|(.*)\\|\\s*$")

func readDocTable(t *testing.T) map[string]docRow {
	t.Helper()
	data, err := os.ReadFile("../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := make(map[string]docRow)
	for _, line := range strings.Split(string(data), "\n") {
		m := docRowRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if _, dup := rows[m[1]]; dup {
			t.Errorf("docs/config.md lists %s twice", m[1])
		}
		rows[m[1]] = docRow{
			typ: strings.TrimSpace(m[2]), def: strings.TrimSpace(m[3]),
			origin: strings.TrimSpace(m[4]), meaning: strings.TrimSpace(m[5]),
		}
	}
	return rows
}

// defaultDocumented reports whether a documented default (a table cell)
// states v: its TOML literal in backquotes, or for a field without a
// default, "required", "unset" or "= <other field>". lit is the literal.
func defaultDocumented(doc string, v reflect.Value) (lit string, ok bool) {
	lit = "`" + tomlLiteral(v) + "`"
	return lit, strings.HasPrefix(doc, lit) ||
		v.IsZero() && (strings.HasPrefix(doc, "required") || strings.HasPrefix(doc, "unset") || strings.HasPrefix(doc, "= "))
}

// docType is the Type column expected for f.
func docType(f *field) string {
	switch f.typeName() {
	case "integer (milliseconds)":
		return "integer (ms)"
	}
	return f.typeName()
}

// TestDocsListEveryField walks Config by reflection and checks that
// docs/config.md has a row for every key, with the real default, the right
// type and origin, and no rows for keys that do not exist.
func TestDocsListEveryField(t *testing.T) {
	if len(originalFields) != 27 {
		t.Fatalf("originalFields has %d keys, the original has 27", len(originalFields))
	}
	rows := readDocTable(t)
	d := Defaults()
	for i := range schema {
		f := &schema[i]
		row, ok := rows[f.Key]
		if !ok {
			t.Errorf("docs/config.md has no table row for %s", f.Key)
			continue
		}
		delete(rows, f.Key)

		if lit, ok := defaultDocumented(row.def, f.value(&d)); !ok {
			t.Errorf("%s: documented default %q, real default %s", f.Key, row.def, lit)
		}

		if want := docType(f); row.typ != want && !strings.HasPrefix(row.typ, want+" (") {
			t.Errorf("%s: documented type %q, want %q", f.Key, row.typ, want)
		}

		wantOrigin := "ptproxy-go extension"
		if originalFields[f.Key] {
			wantOrigin = "original"
		}
		if row.origin != wantOrigin {
			t.Errorf("%s: documented origin %q, want %q", f.Key, row.origin, wantOrigin)
		}
		if noEffect[f.Key] && !strings.Contains(row.meaning, "Accepted, no effect with quic-go") {
			t.Errorf("%s: meaning must say \"Accepted, no effect with quic-go\" and why", f.Key)
		}
	}
	for key := range rows {
		t.Errorf("docs/config.md documents %s, which is not a Config field", key)
	}
	for key := range originalFields {
		if schemaByKey[key] == nil {
			t.Errorf("original field %s is missing from Config", key)
		}
	}
}

func TestDocsMentions(t *testing.T) {
	data, err := os.ReadFile("../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	for _, want := range []string{
		"PTPROXY_<SECTION>__<FIELD>", "PTPROXY_GENERAL__PEER_HOSTNAME", ".yaml", "15728640", "14720",
		"PKCS#8", "PKCS#1", "SEC1", "skip_verify", "built-in defaults", "environment variables",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("docs/config.md does not mention %q", want)
		}
	}
}

var readmeRowRE = regexp.MustCompile("^\\| `([a-z_]+\\.[a-z_]+)` \\|([^|]*)\\|([^|]*)\\|\\s*$")

// TestReadmeListsEveryField keeps the README's short reference (field and
// default) equal to the code, as TestDocsListEveryField does for
// docs/config.md.
func TestReadmeListsEveryField(t *testing.T) {
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if m := readmeRowRE.FindStringSubmatch(line); m != nil {
			rows[m[1]] = strings.TrimSpace(m[2])
		}
	}
	d := Defaults()
	for i := range schema {
		f := &schema[i]
		def, ok := rows[f.Key]
		if !ok {
			t.Errorf("README.md has no row for %s", f.Key)
			continue
		}
		delete(rows, f.Key)
		if lit, ok := defaultDocumented(def, f.value(&d)); !ok {
			t.Errorf("README.md: %s default %q, real default %s", f.Key, def, lit)
		}
	}
	for key := range rows {
		t.Errorf("README.md documents %s, which is not a Config field", key)
	}
}
