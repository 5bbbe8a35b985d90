package config

import (
	"reflect"
	"strings"
	"testing"
)

const clientHead = "[general]\nmode = \"Client\"\npeer_hostname = \"p\"\nhttp_bind_address = \"127.0.0.1:8080\"\n[tls]\ncert = \"c\"\nkey = \"k\"\n"

func TestClientRoutesValid(t *testing.T) {
	toml := clientHead + `
[[listeners]]
address = "127.0.0.1:8081"
endpoint = "admin"

[[routes]]
host = "api.example.com"
path_prefix = "/v1/"
endpoint = "api"
strip_prefix = true

[[routes]]
listener = "127.0.0.1:8080"
host = "*.static.example.com"
endpoint = "static"
`
	c, err := loadString(t, toml, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	wantL := []Listener{{Address: "127.0.0.1:8081", Endpoint: "admin"}}
	wantR := []Route{
		{Host: "api.example.com", PathPrefix: "/v1/", Endpoint: "api", StripPrefix: true},
		{Listener: "127.0.0.1:8080", Host: "*.static.example.com", Endpoint: "static"},
	}
	if !reflect.DeepEqual(c.Listeners, wantL) || !reflect.DeepEqual(c.Routes, wantR) {
		t.Fatalf("listeners %+v routes %+v", c.Listeners, c.Routes)
	}

	yaml := `general:
  mode: Client
  peer_hostname: p
  http_bind_address: "127.0.0.1:8080"
tls:
  cert: c
  key: k
listeners:
  - address: "127.0.0.1:8081"
    endpoint: admin
routes:
  - host: api.example.com
    path_prefix: /v1/
    endpoint: api
    strip_prefix: true
  - listener: "127.0.0.1:8080"
    host: "*.static.example.com"
    endpoint: static
`
	y, err := LoadBytes([]byte(yaml), FormatYAML, "/etc/ptproxy/test.yaml", noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(y.Listeners, wantL) || !reflect.DeepEqual(y.Routes, wantR) {
		t.Fatalf("YAML: listeners %+v routes %+v", y.Listeners, y.Routes)
	}
}

func TestClientRoutesInvalid(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		want       []string
		msg        string
	}{
		{"listener without address", "[[listeners]]\nendpoint = \"x\"\n", []string{"listeners[0].address"}, "required"},
		{"listener bad address", "[[listeners]]\naddress = \"nope\"\n", []string{"listeners[0].address"}, "host:port"},
		{"listener twice", "[[listeners]]\naddress = \"127.0.0.1:8080\"\n", []string{"listeners[0].address"}, "already a listener"},
		{"bad endpoint name", "[[routes]]\nhost = \"a\"\nendpoint = \"a b\"\n", []string{"routes[0].endpoint"}, "letters, digits"},
		{"unknown listener", "[[routes]]\nlistener = \"127.0.0.1:9\"\nendpoint = \"x\"\n", []string{"routes[0].listener"}, "not a listener address"},
		{"bad host", "[[routes]]\nhost = \"a:80\"\nendpoint = \"x\"\n", []string{"routes[0].host"}, "without port"},
		{"bad prefix", "[[routes]]\npath_prefix = \"v1\"\nendpoint = \"x\"\n", []string{"routes[0].path_prefix"}, "start with"},
		{"strip without prefix", "[[routes]]\nhost = \"a\"\nstrip_prefix = true\nendpoint = \"x\"\n", []string{"routes[0].strip_prefix"}, "needs path_prefix"},
		{"catch-all", "[[routes]]\nendpoint = \"x\"\n", []string{"routes[0]"}, "matches every request"},
		{"unknown key", "[[routes]]\nhost = \"a\"\nendpont = \"x\"\n", []string{"routes[0].endpont"}, "unknown key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadString(t, clientHead+tc.text, noEnv)
			if got := fields(err); !sameSet(got, tc.want) {
				t.Fatalf("fields = %q, want %q (%v)", got, tc.want, err)
			}
			if !strings.Contains(err.Error(), tc.msg) || !strings.Contains(err.Error(), "/etc/ptproxy/test.toml: ") {
				t.Errorf("message %q lacks %q or the file", err, tc.msg)
			}
		})
	}
	_, err := loadString(t, serverHead+"[[routes]]\nhost = \"a\"\nendpoint = \"x\"\n[[listeners]]\naddress = \"127.0.0.1:1\"\n", noEnv)
	if got := fields(err); !sameSet(got, []string{"routes", "listeners"}) {
		t.Fatalf("server mode: fields %q (%v)", got, err)
	}
}
