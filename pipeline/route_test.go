package pipeline

import (
	"testing"

	"github.com/ptproxy/ptproxy/httpio"
)

func TestRouteRequest(t *testing.T) {
	routes := []ClientRoute{
		{Host: "api.example.com", PathPrefix: "/v1/", Endpoint: "api", StripPrefix: true},
		{Host: "*.static.example.com", Endpoint: "static"},
		{PathPrefix: "/admin", Endpoint: "admin"},
		{Host: "plain.example.com", PathPrefix: "/x", Endpoint: ""}, // back to the default endpoint
	}
	for _, tc := range []struct {
		authority, path, def string
		endpoint, wantPath   string
	}{
		{"api.example.com", "/v1/users?id=1", "", "api", "/users?id=1"},
		{"API.Example.com:8080", "/v1/", "", "api", "/"},
		{"api.example.com", "/v2/users", "", "", "/v2/users"},
		{"api.example.com", "/v1", "", "", "/v1"}, // the prefix is "/v1/"
		{"a.static.example.com", "/logo.png", "", "static", "/logo.png"},
		{"a.b.static.example.com.", "/", "", "static", "/"},
		{"static.example.com", "/", "", "", "/"}, // the wildcard needs a label
		{"xstatic.example.com", "/", "", "", "/"},
		{"anything", "/admin/users", "", "admin", "/admin/users"},
		{"[::1]:8080", "/adminx", "", "admin", "/adminx"}, // a plain byte prefix
		{"plain.example.com", "/x/y", "lst", "", "/x/y"},
		{"other", "/", "lst", "lst", "/"},
	} {
		h := &Head{Method: "GET", Authority: tc.authority, Path: tc.path, Header: httpio.Header{{Name: "Accept", Value: "*/*"}}}
		routeRequest(h, routes, tc.def)
		got := h.Header.Get(EndpointField)
		if got != tc.endpoint || h.Path != tc.wantPath {
			t.Errorf("%s %s (listener %q): endpoint %q path %q; want %q %q", tc.authority, tc.path, tc.def, got, h.Path, tc.endpoint, tc.wantPath)
		}
		n := 0
		for range h.Header.Values(EndpointField) {
			n++
		}
		if tc.endpoint == "" && n != 0 || tc.endpoint != "" && (n != 1 || h.Header[len(h.Header)-1].Name != EndpointField) {
			t.Errorf("%s %s: %d endpoint fields in %v", tc.authority, tc.path, n, h.Header)
		}
	}
}

// TestCallerCannotPickEndpoint: an endpoint field from the caller is
// removed by the client's Normalize, so only a route names an endpoint.
func TestCallerCannotPickEndpoint(t *testing.T) {
	h := &Head{Method: "GET", Authority: "a", Path: "/", Header: httpio.Header{{Name: "Ptproxy-Endpoint", Value: "admin"}, {Name: "X", Value: "1"}}}
	if err := Normalize(h, Policy{Side: ClientSide}); err != nil {
		t.Fatal(err)
	}
	routeRequest(h, nil, "")
	if h.Header.Get(EndpointField) != "" || h.Header.Get("X") != "1" {
		t.Fatalf("header after Normalize and routing: %v", h.Header)
	}
}
