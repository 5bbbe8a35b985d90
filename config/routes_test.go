package config

import (
	"reflect"
	"strings"
	"testing"
)

const serverHead = "[general]\nmode = \"Server\"\npeer_hostname = \"a.example\"\npeer_hostnames = [\"b.example\", \"c.example\"]\nhttp_connect_address = \"127.0.0.1:8081\"\n[tls]\ncert = \"c\"\nkey = \"k\"\n"

// TestRoutesValid loads a complete routing setup and checks the decoded
// values, the defaults of omitted keys and the effective groups/endpoints.
func TestRoutesValid(t *testing.T) {
	c, err := loadString(t, serverHead+`
[[origin_groups]]
name = "api"
addresses = ["10.0.0.1:8080", "10.0.0.2:8080"]
balance = "sticky"
sticky_key = "cookie:session"
health_path = "/healthz"
health_interval = 1000
health_statuses = "200,204"
tls = true
tls_ca = "origin-ca.pem"

[[origin_groups]]
name = "static"
addresses = ["[::1]:9000"]

[[endpoints]]
name = "api"
origin_group = "api"
[[endpoints.allow]]
identities = ["b.example"]
methods = ["GET", "POST"]
path_prefixes = ["/v1/"]
[[endpoints.allow]]
identities = ["a.example"]

[[endpoints]]
name = "static"
origin_group = "static"

[default_endpoint]
[[default_endpoint.allow]]
methods = ["GET"]
`, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.General.PeerHostnames; !reflect.DeepEqual(got, []string{"b.example", "c.example"}) {
		t.Errorf("peer_hostnames = %q", got)
	}
	if got := c.PeerIdentities(); !reflect.DeepEqual(got, []string{"a.example", "b.example", "c.example"}) {
		t.Errorf("PeerIdentities = %q", got)
	}
	api := c.OriginGroups[0]
	if api.Balance != BalanceSticky || api.StickyKey != "cookie:session" || api.MaxFails != DefaultMaxFails ||
		api.FailTimeout != DefaultFailTimeout || api.HealthTimeout != DefaultHealthTimeout || api.HealthInterval != 1000 ||
		!api.TLS || api.TLSCA != "/etc/ptproxy/origin-ca.pem" {
		t.Errorf("api group = %+v", api)
	}
	if st := c.OriginGroups[1]; st.Balance != BalanceRoundRobin || st.HealthStatuses != "200-399" || st.HealthPath != "" {
		t.Errorf("static group defaults = %+v", st)
	}
	groups := c.EffectiveOriginGroups()
	if len(groups) != 3 || groups[2].Name != "default" || !groups[2].Implicit || groups[2].Addresses[0] != "127.0.0.1:8081" {
		t.Errorf("effective groups = %+v", groups)
	}
	eps := c.EffectiveEndpoints()
	if len(eps) != 3 || eps[0].Name != "" || eps[0].OriginGroup != "default" || len(eps[0].Allow) != 1 ||
		eps[1].Name != "api" || len(eps[1].Allow) != 2 || eps[1].Allow[0].PathPrefixes[0] != "/v1/" {
		t.Errorf("effective endpoints = %+v", eps)
	}
}

// TestRoutesDefaultGroupReplacesConnectAddress: an [[origin_groups]] entry
// named "default" is the default group; http_connect_address is then
// not required, and giving both is refused.
func TestRoutesDefaultGroupReplacesConnectAddress(t *testing.T) {
	base := "[general]\nmode = \"Server\"\npeer_hostname = \"a.example\"\n%s[tls]\ncert = \"c\"\nkey = \"k\"\n" +
		"[[origin_groups]]\nname = \"default\"\naddresses = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n"
	c, err := loadString(t, strings.Replace(base, "%s", "", 1), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if g := c.EffectiveOriginGroups(); len(g) != 1 || g[0].Implicit || len(g[0].Addresses) != 2 {
		t.Errorf("effective groups = %+v", g)
	}
	_, err = loadString(t, strings.Replace(base, "%s", "http_connect_address = \"o:80\"\n", 1), noEnv)
	if got := fields(err); !sameSet(got, []string{"general.http_connect_address"}) || !strings.Contains(err.Error(), "origin_groups[0]") {
		t.Errorf("both given: %v", err)
	}
}

// TestRoutesInvalid: each mistake is reported naming its field.
func TestRoutesInvalid(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		want       []string
		msg        string
	}{
		{"unknown group", "[[endpoints]]\nname = \"x\"\norigin_group = \"nope\"\n",
			[]string{"endpoints[0].origin_group"}, `unknown origin group "nope": no origin_groups[].name is "nope"`},
		{"duplicate group", "[[origin_groups]]\nname = \"g\"\naddresses = [\"h:1\"]\n[[origin_groups]]\nname = \"g\"\naddresses = [\"h:2\"]\n",
			[]string{"origin_groups[1].name"}, "duplicate name \"g\" (also origin_groups[0].name)"},
		{"duplicate endpoint", "[[endpoints]]\nname = \"e\"\n[[endpoints]]\nname = \"e\"\n",
			[]string{"endpoints[1].name"}, "duplicate name \"e\" (also endpoints[0].name)"},
		{"endpoint without name", "[[endpoints]]\norigin_group = \"default\"\n", []string{"endpoints[0].name"}, "required"},
		{"sticky without key", "[[origin_groups]]\nname = \"g\"\naddresses = [\"h:1\"]\nbalance = \"sticky\"\n",
			[]string{"origin_groups[0].sticky_key"}, "required with balance"},
		{"bad sticky key", "[[origin_groups]]\nname = \"g\"\naddresses = [\"h:1\"]\nbalance = \"sticky\"\nsticky_key = \"query:x\"\n",
			[]string{"origin_groups[0].sticky_key"}, `"header:<Name>" or "cookie:<name>"`},
		{"bad addresses", "[[origin_groups]]\nname = \"g\"\naddresses = [\"h\", \"h:99999\", \":80\", \"h:1\", \"h:1\"]\n",
			[]string{"origin_groups[0].addresses[0]", "origin_groups[0].addresses[1]", "origin_groups[0].addresses[2]", "origin_groups[0].addresses[4]"}, "host:port"},
		{"no addresses", "[[origin_groups]]\nname = \"g\"\naddresses = []\n", []string{"origin_groups[0].addresses"}, "at least one"},
		{"bad balance", "[[origin_groups]]\nname = \"g\"\naddresses = [\"h:1\"]\nbalance = \"RoundRobin\"\n", []string{"origin_groups[0].balance"}, "round_robin"},
		{"bad health", "[[origin_groups]]\nname = \"g\"\naddresses = [\"h:1\"]\nhealth_path = \"healthz\"\nhealth_interval = 0\nhealth_statuses = \"2xx\"\nmax_fails = -1\n",
			[]string{"origin_groups[0].health_path", "origin_groups[0].health_interval", "origin_groups[0].health_statuses", "origin_groups[0].max_fails"}, "must"},
		{"tls fields without tls", "[[origin_groups]]\nname = \"g\"\naddresses = [\"h:1\"]\ntls_ca = \"ca.pem\"\n", []string{"origin_groups[0].tls_ca"}, "tls = true"},
		{"cert without key", "[[origin_groups]]\nname = \"g\"\naddresses = [\"h:1\"]\ntls = true\ntls_cert = \"c.pem\"\n", []string{"origin_groups[0].tls_key"}, "go together"},
		{"unknown key", "[[origin_groups]]\nname = \"g\"\naddresses = [\"h:1\"]\nbalanse = \"random\"\n", []string{"origin_groups[0].balanse"}, `did you mean "balance"`},
		{"wrong type", "[[origin_groups]]\nname = \"g\"\naddresses = \"h:1\"\nmax_fails = \"3\"\n",
			[]string{"origin_groups[0].addresses", "origin_groups[0].max_fails"}, "expected"},
		{"not an array", "[origin_groups]\nname = \"g\"\n", []string{"origin_groups"}, "array of tables"},
		{"acl", "[[endpoints]]\nname = \"e\"\n[[endpoints.allow]]\nidentities = [\"nobody.example\"]\nmethods = [\"get\"]\npath_prefixes = [\"v1\"]\n",
			[]string{"endpoints[0].allow[0].identities[0]", "endpoints[0].allow[0].methods[0]", "endpoints[0].allow[0].path_prefixes[0]"}, "never matches"},
		{"default endpoint unknown group", "[default_endpoint]\norigin_group = \"x\"\n", []string{"default_endpoint.origin_group"}, "unknown origin group"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadString(t, serverHead+tc.text, noEnv)
			if got := fields(err); !sameSet(got, tc.want) {
				t.Fatalf("fields = %q, want %q (%v)", got, tc.want, err)
			}
			if !strings.Contains(err.Error(), tc.msg) || !strings.Contains(err.Error(), "/etc/ptproxy/test.toml: ") {
				t.Errorf("message %q lacks %q or the file", err, tc.msg)
			}
		})
	}
}

// TestRoutesClientModeRefused: the server-side sections are Server only.
func TestRoutesClientModeRefused(t *testing.T) {
	_, err := loadString(t, "[general]\nmode = \"Client\"\npeer_hostname = \"p\"\npeer_hostnames = [\"q\"]\n[tls]\ncert = \"c\"\nkey = \"k\"\n"+
		"[[origin_groups]]\nname = \"g\"\naddresses = [\"h:1\"]\n[[endpoints]]\nname = \"e\"\n[default_endpoint]\norigin_group = \"g\"\n", noEnv)
	want := []string{"general.peer_hostnames", "origin_groups", "endpoints", "default_endpoint"}
	if got := fields(err); !sameSet(got, want) {
		t.Fatalf("fields = %q, want %q (%v)", got, want, err)
	}
}

// TestRoutesYAML: the YAML form decodes to the same Config as the TOML one.
func TestRoutesYAML(t *testing.T) {
	toml := serverHead + `
[[origin_groups]]
name = "api"
addresses = ["10.0.0.1:8080", "10.0.0.2:8080"]
balance = "least_requests"
max_fails = 0

[[endpoints]]
name = "api"
origin_group = "api"
[[endpoints.allow]]
identities = ["b.example"]
methods = ["GET"]
`
	yaml := `general:
  mode: Server
  peer_hostname: a.example
  peer_hostnames: [b.example, c.example]
  http_connect_address: "127.0.0.1:8081"
tls:
  cert: c
  key: k
origin_groups:
  - name: api
    addresses: ["10.0.0.1:8080", "10.0.0.2:8080"]
    balance: least_requests
    max_fails: 0
endpoints:
  - name: api
    origin_group: api
    allow:
      - identities: [b.example]
        methods: [GET]
`
	tc, err := LoadBytes([]byte(toml), FormatTOML, "/etc/ptproxy/x.toml", noEnv)
	if err != nil {
		t.Fatal(err)
	}
	yc, err := LoadBytes([]byte(yaml), FormatYAML, "/etc/ptproxy/x.yaml", noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(tc.OriginGroups, yc.OriginGroups) || !reflect.DeepEqual(tc.Endpoints, yc.Endpoints) ||
		!reflect.DeepEqual(tc.General, yc.General) {
		t.Errorf("TOML and YAML differ:\n%+v\n%+v", tc, yc)
	}
	if tc.OriginGroups[0].MaxFails != 0 {
		t.Errorf("explicit max_fails = 0 not kept: %d", tc.OriginGroups[0].MaxFails)
	}
	// A YAML mistake names the field the same way.
	_, err = LoadBytes([]byte(strings.Replace(yaml, "balance: least_requests", "balance: 5", 1)), FormatYAML, "/etc/ptproxy/x.yaml", noEnv)
	if got := fields(err); !sameSet(got, []string{"origin_groups[0].balance"}) {
		t.Errorf("fields = %q (%v)", got, err)
	}
}

// TestRoutesEnv: peer_hostnames from the environment is comma-separated;
// the arrays of tables cannot come from there, and saying so names them.
func TestRoutesEnv(t *testing.T) {
	c, err := loadString(t, serverHead, []string{"PTPROXY_GENERAL__PEER_HOSTNAMES=x.example, y.example"})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c.General.PeerHostnames, []string{"x.example", "y.example"}) {
		t.Errorf("peer_hostnames = %q", c.General.PeerHostnames)
	}
	_, err = loadString(t, serverHead, []string{"PTPROXY_ORIGIN_GROUPS__NAME=x"})
	if err == nil || !strings.Contains(err.Error(), "only the configuration file can set") {
		t.Errorf("got %v", err)
	}
}

// TestRoutesAbsentLeavesConfigUnchanged: a file without the new sections
// decodes exactly as before (no groups, no endpoints, zero default).
func TestRoutesAbsentLeavesConfigUnchanged(t *testing.T) {
	c := mustLoad(t, "testdata/valid/server.toml", noEnv)
	if c.OriginGroups != nil || c.Endpoints != nil || !reflect.DeepEqual(c.DefaultEndpoint, DefaultEndpoint{}) || c.General.PeerHostnames != nil {
		t.Errorf("new fields set: %+v", c)
	}
	if g := c.EffectiveOriginGroups(); len(g) != 1 || g[0].Name != "default" || g[0].Addresses[0] != "localhost:8081" || g[0].HealthPath != "" {
		t.Errorf("effective groups = %+v", g)
	}
}

func TestParseStatuses(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []StatusRange
	}{
		{"200-399", []StatusRange{{200, 399}}},
		{"200, 204,300-302", []StatusRange{{200, 200}, {204, 204}, {300, 302}}},
		{"", nil}, {"2xx", nil}, {"399-200", nil}, {"99", nil}, {"200-600", nil},
	} {
		got, problem := ParseStatuses(tc.in)
		if !reflect.DeepEqual(got, tc.want) || (tc.want == nil) != (problem != "") {
			t.Errorf("ParseStatuses(%q) = %v, %q", tc.in, got, problem)
		}
	}
}
