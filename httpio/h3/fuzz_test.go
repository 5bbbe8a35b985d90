package h3

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// The fuzz targets read arbitrary bytes as a request stream, a response
// stream or a control stream. Besides not panicking they check that
// (1) the outcome does not depend on how the stream splits its data into
// Reads, and (2) a message that reads successfully writes back out with
// our Writer and reads again to the same heads, frames and trailers.
// Seeds live in testdata/fuzz/<Target>; -write-seeds regenerates them.

func FuzzReadRequest(f *testing.F) {
	f.Fuzz(func(t *testing.T, in []byte) { fuzzMessage(t, in, ReadsRequest, false) })
}

func FuzzReadResponse(f *testing.F) {
	f.Fuzz(func(t *testing.T, in []byte) {
		fuzzMessage(t, in, ReadsResponse, false)
		fuzzMessage(t, in, ReadsResponse, true)
	})
}

func fuzzMessage(t *testing.T, in []byte, role Role, noBody bool) {
	m, err := readBytes(in, role, noBody, 0)
	m1, err1 := readBytes(in, role, noBody, 1)
	sameOutcome(t, err, err1)
	if err != nil {
		if e, ok := errors.AsType[*Error](err); ok && e.Code == 0 {
			t.Fatalf("error without code: %v", err)
		}
		return
	}
	equalMessages(t, m, m1)

	s := &memStream{}
	w := NewWriter(s)
	defer w.Release()
	for i := range m.heads {
		if err := w.WriteHead(&m.heads[i]); err != nil {
			t.Fatalf("re-encoding head %+v: %v", m.heads[i], err)
		}
	}
	for _, fr := range m.frames {
		if err := w.WriteData(fr); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.WriteTrailers(m.trailers); err != nil {
		t.Fatalf("re-encoding trailers %v: %v", m.trailers, err)
	}
	m2, err := readBytes(s.out, role, noBody, 0)
	if err != nil {
		t.Fatalf("re-reading: %v", err)
	}
	if len(m.trailers) == 0 {
		m.trailers = nil // an empty trailer section is not sent again
	}
	equalMessages(t, m, m2)
}

func sameOutcome(t *testing.T, a, b error) {
	t.Helper()
	if (a == nil) != (b == nil) {
		t.Fatalf("outcome depends on read sizes: %v vs %v", a, b)
	}
	if a == nil {
		return
	}
	ea, oka := errors.AsType[*Error](a)
	eb, okb := errors.AsType[*Error](b)
	if oka != okb || oka && (ea.Code != eb.Code || ea.Conn != eb.Conn) || !oka && a.Error() != b.Error() {
		t.Fatalf("outcome depends on read sizes: %v vs %v", a, b)
	}
}

func equalMessages(t *testing.T, a, b message) {
	t.Helper()
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("messages differ:\n%+v\n%+v", a, b)
	}
}

func FuzzControlStream(f *testing.F) {
	f.Fuzz(func(t *testing.T, in []byte) {
		s, ids, err := readControl(in, 0)
		s1, ids1, err1 := readControl(in, 1)
		if s != s1 || !reflect.DeepEqual(ids, ids1) {
			t.Fatalf("outcome depends on read sizes: %+v %v / %+v %v", s, ids, s1, ids1)
		}
		sameOutcome(t, err, err1)
		// A control stream can only end in a connection error.
		if e, ok := errors.AsType[*Error](err); !ok || !e.Conn {
			t.Fatalf("not a connection error: %v", err)
		}
		for i := 1; i < len(ids); i++ {
			if ids[i] > ids[i-1] {
				t.Fatalf("GOAWAY ids grew: %v", ids)
			}
		}
		if err != nil && len(ids) == 0 && s == (Settings{}) {
			return
		}
		b := AppendControlPreface(nil, s)
		for _, id := range ids {
			b = AppendGoAway(b, id)
		}
		typ, n := parseVarint(b)
		if typ != StreamTypeControl {
			t.Fatal("preface stream type")
		}
		s2, ids2, _ := readControl(b[n:], 0)
		s.QPACKMaxTableCapacity, s.QPACKBlockedStreams = 0, 0
		if s2 != s || !reflect.DeepEqual(ids2, ids) {
			t.Fatalf("re-read %+v %v, want %+v %v", s2, ids2, s, ids)
		}
	})
}

func readControl(in []byte, chunk int) (Settings, []uint64, error) {
	c := NewControlReader(&memStream{in: in, chunk: chunk})
	s, err := c.ReadSettings()
	if err != nil {
		return Settings{}, nil, err
	}
	var ids []uint64
	for {
		id, err := c.NextGoAway()
		if err != nil {
			return s, ids, err
		}
		ids = append(ids, id)
	}
}

var writeSeeds = flag.Bool("write-seeds", false, "rewrite the fuzz seed corpora in testdata/fuzz")

func TestWriteFuzzSeeds(t *testing.T) {
	if !*writeSeeds {
		t.Skip("-write-seeds not set")
	}
	post := kv(getReq[2:], ":method", "POST", "content-length", "5", "content-type", "text/plain")
	seeds := map[string]map[string][]byte{
		"FuzzReadRequest": {
			"get":              headers(getReq...),
			"post-trailers":    cat(headers(post...), data("he"), data("llo"), headers("x-sum", "1")),
			"grease":           cat(grease, headers(getReq...), unknown, data("a"), grease, headers("x", "1"), grease),
			"connect":          headers(":method", "CONNECT", ":authority", "example.com:443"),
			"extended-connect": headers(":method", "CONNECT", ":protocol", "websocket", ":scheme", "https", ":authority", "a", ":path", "/c"),
			"uppercase":        headers(kv(getReq, "X-Up", "1")...),
			"data-first":       cat(data("a"), headers(getReq...)),
			"truncated-data":   cat(headers(getReq...), data("abcdef")[:4]),
			"dynamic-ref":      rawHeaders(0x00, 0x00, 0x80),
			"cl-mismatch":      cat(headers(kv(getReq, "content-length", "2")...), data("abc")),
			"settings":         cat(frame(frameSettings, nil), headers(getReq...)),
			"cookies-host":     headers(":method", "GET", ":scheme", "http", ":path", "/", "host", "h:8080", "cookie", "a=1", "cookie", "b=2", "te", "trailers"),
		},
		"FuzzReadResponse": {
			"ok":              cat(headers(":status", "200", "content-length", "2"), data("hi")),
			"interim":         cat(headers(":status", "100"), headers(":status", "103", "link", "</a>"), headers(":status", "200"), data("x")),
			"no-content":      headers(":status", "204"),
			"status-101":      headers(":status", "101"),
			"no-status":       headers("x", "1"),
			"trailers":        cat(headers(":status", "200"), data("a"), grease, headers("grpc-status", "0"), unknown),
			"data-after-tr":   cat(headers(":status", "200"), headers("a", "b"), data("x")),
			"push-promise":    cat(frame(framePushPromise, []byte{0}), headers(":status", "200")),
			"cl-short":        cat(headers(":status", "200", "content-length", "9"), data("abc")),
			"head-with-cl":    headers(":status", "200", "content-length", "100"),
			"huffman-literal": headers(":status", "418", "x-long-custom-name", "some value with spaces"),
		},
		"FuzzControlStream": {
			"settings":         settingsFrame(0x06, 65536, 0x08, 1, 0x33, 1, 0x21, 5),
			"goaways":          cat(settingsFrame(), AppendGoAway(nil, 8), grease, AppendGoAway(nil, 4)),
			"duplicate":        settingsFrame(0x06, 1, 0x06, 2),
			"http2-setting":    settingsFrame(0x04, 65535),
			"missing-settings": AppendGoAway(nil, 0),
			"goaway-grows":     cat(settingsFrame(), AppendGoAway(nil, 0), AppendGoAway(nil, 4)),
			"push-frames":      cat(settingsFrame(), frame(frameMaxPushID, []byte{3}), frame(frameCancelPush, []byte{2}), AppendGoAway(nil, 1)),
			"truncated":        settingsFrame(0x06, 1000)[:3],
			"qpack-settings":   settingsFrame(0x01, 4096, 0x07, 16),
		},
	}
	for target, files := range seeds {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, b := range files {
			content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
