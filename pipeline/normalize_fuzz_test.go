package pipeline

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/ptproxy/ptproxy/httpio"
)

// Fuzz targets for the header normalizer. Each checks the forwarding rules
// against an oracle written independently of normalize.go:
//
//   - no hop-by-hop field survives, nor any field named in Connection;
//   - nothing is added except, with AddForwarded, exactly one Forwarded
//     line, placed after the last existing Forwarded line;
//   - the other fields keep their order (the output, minus that line, is
//     exactly the input filtered by the removal rule);
//   - every output field is valid per httpio.ValidFieldName and
//     ValidFieldValue, whatever the peer addresses are.
//
// Run one with e.g. go test ./pipeline -run '^$' -fuzz '^FuzzNormalizeRequest$' -fuzztime 5m.
// Seeds: the f.Add calls and pipeline/testdata/fuzz/<target>/.

// oracleHopByHop is RFC 9110 7.6.1 plus the original's additions, spelled
// out again rather than taken from normalize.go.
var oracleHopByHop = map[string]bool{
	"connection": true, "keep-alive": true, "proxy-connection": true, "te": true,
	"transfer-encoding": true, "trailer": true, "upgrade": true,
	"proxy-authenticate": true, "proxy-authorization": true,
}

// oracleDropped returns the lower-case names a header loses: the
// hop-by-hop ones, those named in Connection (but "close"), and extra.
func oracleDropped(h httpio.Header, extra ...string) map[string]bool {
	drop := map[string]bool{}
	for k := range oracleHopByHop {
		drop[k] = true
	}
	for _, e := range extra {
		drop[e] = true
	}
	for _, f := range h {
		if asciiLower(f.Name) != "connection" {
			continue
		}
		for _, t := range strings.Split(f.Value, ",") {
			t = asciiLower(strings.Trim(t, " \t"))
			if t != "" && t != "close" {
				drop[t] = true
			}
		}
	}
	return drop
}

// asciiLower folds ASCII letters only: field names are compared that way
// (strings.ToLower would turn the Kelvin sign into k).
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func oracleFilter(h httpio.Header, drop map[string]bool) httpio.Header {
	var out httpio.Header
	for _, f := range h {
		if !drop[asciiLower(f.Name)] {
			out = append(out, f)
		}
	}
	return out
}

// checkFields asserts every field is valid on the wire.
func checkFields(t *testing.T, what string, h httpio.Header) {
	t.Helper()
	for _, f := range h {
		if !httpio.ValidFieldName(f.Name) || !httpio.ValidFieldValue(f.Value) {
			t.Fatalf("%s: invalid field %q: %q", what, f.Name, f.Value)
		}
	}
}

// checkNormalized compares got with the oracle's expectation: want plus,
// when added, one Forwarded line after the last existing one.
func checkNormalized(t *testing.T, got, want httpio.Header, added bool, p Peer) {
	t.Helper()
	checkFields(t, "output", got)
	for _, f := range got {
		if oracleHopByHop[asciiLower(f.Name)] {
			t.Fatalf("hop-by-hop field %q survived: %v", f.Name, got)
		}
	}
	if !added {
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("fields changed:\n got %q\nwant %q", got, want)
		}
		return
	}
	if len(got) != len(want)+1 {
		t.Fatalf("want exactly one added field:\n got %q\nwant %q + Forwarded", got, want)
	}
	at := 0
	for i, f := range want {
		if strings.EqualFold(f.Name, "Forwarded") {
			at = i + 1
		}
	}
	if at == 0 {
		at = len(want)
	}
	fw := got[at]
	if fw.Name != "Forwarded" || !strings.HasPrefix(fw.Value, "for=") || !strings.Contains(fw.Value, ";by=") {
		t.Fatalf("field %d is %q: %q, want the new Forwarded line", at, fw.Name, fw.Value)
	}
	if p.Proto != "" && !strings.HasSuffix(fw.Value, ";proto="+p.Proto) {
		t.Fatalf("Forwarded %q without proto=%s", fw.Value, p.Proto)
	}
	rest := append(append(httpio.Header{}, got[:at]...), got[at+1:]...)
	if fmt.Sprint(rest) != fmt.Sprint(want) {
		t.Fatalf("fields other than the new Forwarded changed:\n got %q\nwant %q", rest, want)
	}
}

// FuzzNormalizeRequest parses data as a request the way the client side
// does (strict httpio reader, RequestHead), then applies Normalize with
// either policy, with arbitrary peer address strings.
func FuzzNormalizeRequest(f *testing.F) {
	seeds := []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nConnection: X-Secret, close\r\nX-Secret: 1\r\nX-Keep: 2\r\nKeep-Alive: 5\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\nTE: trailers\r\n\r\n0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nForwarded: for=x\r\nX-A: 1\r\nforwarded: for=y\r\nX-B: 2\r\n\r\n",
		"GET http://b:8080/x?y HTTP/1.1\r\nHost: a\r\nProxy-Authorization: Basic Zm9v\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\n\r\n",
		"GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive, ,x-a,,X-A\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 0\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: \t connection , upgrade\r\nCookie: a\r\nCookie: b\r\n\r\n",
	}
	for i, s := range seeds {
		f.Add([]byte(s), i%2 == 0, i%3 == 0, "192.0.2.1:51000", "[::1]:8080")
	}
	f.Add([]byte(seeds[1]), true, true, "", "unix:/run/x\r\nX: y")
	f.Add([]byte(seeds[3]), true, false, "[fe80::1%eth0]:1", "::ffff:10.0.0.1")
	f.Fuzz(func(t *testing.T, data []byte, addForwarded, serverSide bool, forAddr, byAddr string) {
		r := httpio.NewReader(bytes.NewReader(data), httpio.Limits{})
		defer r.Release()
		var req httpio.Request
		if r.ReadRequest(&req) != nil {
			return
		}
		orig := req.Header.Clone()
		checkFields(t, "parsed input", orig)
		peer := Peer{For: forAddr, By: byAddr, Proto: "http"}
		side := ClientSide
		if serverSide {
			side, peer.Proto = ServerSide, "http3"
		}
		h, herr := RequestHead(&req, peer)
		if herr != nil {
			if req.Method != "CONNECT" && req.Host != "" {
				t.Fatalf("RequestHead refused %s with host %q: %v", req.Method, req.Host, herr)
			}
			return
		}
		if err := Normalize(h, Policy{Side: side, AddForwarded: addForwarded}); err != nil {
			t.Fatalf("Normalize refused a head RequestHead accepted: %v", err)
		}
		want := oracleFilter(orig, oracleDropped(orig, "content-length", "host"))
		checkNormalized(t, h.Header, want, addForwarded, peer)
		if h.Authority == "" {
			t.Fatal("empty authority accepted")
		}
	})
}

// FuzzNormalizeResponse parses data as an origin response (server side) and
// checks ResponseHead: hop-by-hop fields out, Content-Length only as
// metadata of a bodiless HEAD answer or 304, the rest in order.
func FuzzNormalizeResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: x-a\r\nX-A: 1\r\nX-B: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n0\r\nX-T: 1\r\n\r\n",
		"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nETag: x\r\n\r\n",
		"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nKeep-Alive: timeout=5\r\n\r\n",
		"HTTP/1.0 200 OK\r\nConnection: keep-alive, Upgrade\r\nUpgrade: x\r\n\r\nbody",
	} {
		f.Add([]byte(s), "GET")
		f.Add([]byte(s), "HEAD")
	}
	f.Fuzz(func(t *testing.T, data []byte, method string) {
		if method != "GET" && method != "HEAD" && method != "POST" {
			method = "GET"
		}
		r := httpio.NewReader(bytes.NewReader(data), httpio.Limits{})
		defer r.Release()
		var resp httpio.Response
		if r.ReadResponse(&resp, method) != nil {
			return
		}
		orig := resp.Header.Clone()
		h := ResponseHead(&resp)
		var extra []string
		if resp.Body.Kind != httpio.NoBody || resp.Status < 200 || resp.Status == 204 {
			extra = append(extra, "content-length")
		}
		want := oracleFilter(orig, oracleDropped(orig, extra...))
		checkNormalized(t, h.Header, want, false, Peer{})
		// Normalize on a response head only removes hop-by-hop fields,
		// which are gone already: it must be a no-op.
		before := fmt.Sprint(h.Header)
		if err := Normalize(h, Policy{Side: ServerSide, AddForwarded: true}); err != nil || fmt.Sprint(h.Header) != before {
			t.Fatalf("Normalize changed a response head: %v %q -> %q", err, before, h.Header)
		}
	})
}

// FuzzRemoveHopByHop builds a header from arbitrary name/value lines (not
// necessarily what a reader accepts: the function is exported and used on
// headers from net/http maps too) and checks removal and order.
func FuzzRemoveHopByHop(f *testing.F) {
	f.Add("Connection: a, b\nA: 1\nb: 2\nC: 3\nTE: x\nConnection: c,close\nc: 4\nClose: 5")
	f.Add("K: \u212a\nkeep-alive: 1\nKeep-Alive: 2\nX: y")
	f.Fuzz(func(t *testing.T, lines string) {
		var h httpio.Header
		for _, l := range strings.Split(lines, "\n") {
			name, value, _ := strings.Cut(l, ":")
			h = append(h, httpio.Field{Name: name, Value: strings.TrimLeft(value, " ")})
		}
		orig := h.Clone()
		got := RemoveHopByHop(h)
		want := oracleFilter(orig, oracleDropped(orig))
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("RemoveHopByHop:\n got %q\nwant %q", got, want)
		}
	})
}

// FuzzAppendForwarded appends to a header of existing lines with arbitrary
// peer addresses: the new line is one valid field after the last
// Forwarded line.
func FuzzAppendForwarded(f *testing.F) {
	f.Add("Forwarded: for=a\nX: 1", "192.0.2.1:1", "[2001:db8::1]:443", uint8(0))
	f.Add("", "", "\"\\\r\n", uint8(1))
	f.Add("X: 1\nforwarded: by=b\nY: 2", "[::ffff:1.2.3.4%lo]:9", "not an address", uint8(2))
	f.Fuzz(func(t *testing.T, lines, forAddr, byAddr string, proto uint8) {
		var h httpio.Header
		if lines != "" {
			for _, l := range strings.Split(lines, "\n") {
				name, value, _ := strings.Cut(l, ":")
				if !httpio.ValidFieldName(name) || !httpio.ValidFieldValue(value) {
					return
				}
				h = append(h, httpio.Field{Name: name, Value: value})
			}
		}
		p := Peer{For: forAddr, By: byAddr, Proto: []string{"", "http", "http3"}[proto%3]}
		orig := h.Clone()
		got := AppendForwarded(h, p)
		checkNormalized(t, got, orig, true, p)
	})
}
