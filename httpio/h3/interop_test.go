package h3

import (
	"io"
	"reflect"
	"testing"

	"github.com/ptproxy/ptproxy/httpio"
	"github.com/quic-go/qpack"
)

// splitFrames parses a byte string into frames.
func splitFrames(t *testing.T, b []byte) (types []uint64, payloads [][]byte) {
	t.Helper()
	for len(b) > 0 {
		typ, n := parseVarint(b)
		l, m := parseVarint(b[n:])
		if n == 0 || m == 0 || uint64(len(b)-n-m) < l {
			t.Fatalf("bad frame at %x", b)
		}
		types = append(types, typ)
		payloads = append(payloads, b[n+m:n+m+int(l)])
		b = b[n+m+int(l):]
	}
	return types, payloads
}

func qpackDecode(t *testing.T, p []byte) []qpack.HeaderField {
	t.Helper()
	next := qpack.NewDecoder().Decode(p)
	var out []qpack.HeaderField
	for {
		f, err := next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("qpack decoder: %v", err)
		}
		out = append(out, f)
	}
}

// TestInteropOurEncoding: qpack's own decoder reads what we write, with
// the names lower-cased and everything else as given.
func TestInteropOurEncoding(t *testing.T) {
	s := &memStream{}
	w := NewWriter(s)
	defer w.Release()
	req := &Head{Method: "CONNECT", Protocol: "websocket", Scheme: "https", Authority: "h:1", Path: "/ws",
		Fields: httpio.Header{{Name: "User-Agent", Value: "ptproxy"}, {Name: "x-Bin", Value: "\x80\xff obs-text"}, {Name: "Cookie", Value: ""}}}
	if err := w.WriteHead(req); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteData([]byte("d")); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteTrailers(httpio.Header{{Name: "Grpc-Status", Value: "0"}}); err != nil {
		t.Fatal(err)
	}
	types, payloads := splitFrames(t, s.out)
	if !reflect.DeepEqual(types, []uint64{frameHeaders, frameData, frameHeaders}) {
		t.Fatalf("frame types %v", types)
	}
	want := []qpack.HeaderField{
		{Name: ":method", Value: "CONNECT"}, {Name: ":scheme", Value: "https"}, {Name: ":authority", Value: "h:1"},
		{Name: ":path", Value: "/ws"}, {Name: ":protocol", Value: "websocket"},
		{Name: "user-agent", Value: "ptproxy"}, {Name: "x-bin", Value: "\x80\xff obs-text"}, {Name: "cookie", Value: ""},
	}
	if got := qpackDecode(t, payloads[0]); !reflect.DeepEqual(got, want) {
		t.Errorf("head\n got %v\nwant %v", got, want)
	}
	if got := qpackDecode(t, payloads[2]); !reflect.DeepEqual(got, []qpack.HeaderField{{Name: "grpc-status", Value: "0"}}) {
		t.Errorf("trailers %v", got)
	}

	// And a response, all statuses through the static table or literal.
	for _, st := range []int{100, 103, 200, 204, 304, 404, 418, 503, 599} {
		s := &memStream{}
		w := NewWriter(s)
		if err := w.WriteHead(&Head{Status: st}); err != nil {
			t.Fatal(err)
		}
		w.Release()
		_, payloads := splitFrames(t, s.out)
		got := qpackDecode(t, payloads[0])
		if len(got) != 1 || got[0].Name != ":status" || got[0].Value != statusText(st) {
			t.Errorf("status %d: %v", st, got)
		}
	}
}

// TestInteropTheirEncoding: we read what qpack's encoder writes, static
// table hits and literals alike.
func TestInteropTheirEncoding(t *testing.T) {
	fields := []string{
		":method", "GET", ":scheme", "https", ":authority", "example.com", ":path", "/",
		"accept", "*/*", "accept-encoding", "gzip, deflate, br", "content-type", "application/json",
		"cache-control", "no-cache", "user-agent", "curl/8", "x-custom", "anything at all", "cookie", "a", "cookie", "b",
	}
	m, err := readBytes(headers(fields...), ReadsRequest, false, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range m.heads[0].Fields {
		got = append(got, f.Name, f.Value)
	}
	if !reflect.DeepEqual(got, fields[8:]) {
		t.Errorf("got %q", got)
	}
}
