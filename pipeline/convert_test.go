package pipeline

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ptproxy/ptproxy/httpio"
	"github.com/ptproxy/ptproxy/httpio/h3"
)

// TestConvertRequestURI: :path is the caller's target byte for byte,
// whatever it holds (no re-escaping, no cleaning; the old net/http detour
// needed care for "//" paths).
func TestConvertRequestURI(t *testing.T) {
	for _, tc := range []struct{ method, target string }{
		{"GET", "/"}, {"GET", "/a/b"}, {"GET", "//a"}, {"GET", "//a//b?x=//y"}, {"GET", "/a%2Fb"},
		{"GET", "/a%2fb/%7E"}, {"GET", "/a?b=c&d"}, {"GET", "/?"}, {"GET", "/a?"}, {"GET", "/a??b"},
		{"GET", "/a/../b/./c"}, {"GET", `//a"b`},
		{"OPTIONS", "*"}, {"GET", "/@user:pass"}, {"GET", "/;p=1;q"},
	} {
		h := &Head{Method: tc.method, Authority: "example.com:8443", Path: tc.target}
		got := RequestH3Head(h)
		if got.Path != tc.target || got.Authority != "example.com:8443" || got.Scheme != "https" || got.Method != tc.method || got.Protocol != "" {
			t.Errorf("%q: %+v", tc.target, got)
		}
		back := roundTripH3(t, got)
		if back.Path != tc.target {
			t.Errorf("%q: :path %q after the codec", tc.target, back.Path)
		}
	}
}

// roundTripH3 writes h with the codec and reads it back.
func roundTripH3(t *testing.T, h *h3.Head) *h3.Head {
	t.Helper()
	var b bytes.Buffer
	w := clientWriting(&b).cw
	if h.Status != 0 {
		w = serverWriting(&b).sw
	}
	if err := w.WriteHead(h); err != nil {
		t.Fatalf("WriteHead(%+v): %v", h, err)
	}
	var r *h3.Reader
	if h.Status != 0 {
		r = clientReading(b.Bytes()).cr
	} else {
		r = serverReading(b.Bytes()).sr
	}
	got, err := r.ReadHead()
	if err != nil {
		t.Fatalf("ReadHead: %v", err)
	}
	return got
}

func TestConvertRequestH3Head(t *testing.T) {
	fields := httpio.Header{
		{Name: "x-a", Value: "1"}, {Name: "Accept", Value: "a"}, {Name: "X-A", Value: "2"},
		{Name: "Cookie", Value: "c=1"}, {Name: "cookie", Value: "d=2"},
	}
	for _, tc := range []struct {
		name    string
		body    httpio.Framing
		trailer []string
		framing httpio.Header
		cl      int64
	}{
		{"no body", httpio.Framing{Kind: httpio.NoBody}, nil, nil, -1},
		{"length 0", httpio.Framing{Kind: httpio.LengthBody}, nil, httpio.Header{{Name: "content-length", Value: "0"}}, 0},
		{"length", httpio.Framing{Kind: httpio.LengthBody, Length: 12}, nil, httpio.Header{{Name: "content-length", Value: "12"}}, 12},
		{"chunked", httpio.Framing{Kind: httpio.ChunkedBody}, nil, nil, -1},
		{"trailers", httpio.Framing{Kind: httpio.ChunkedBody}, []string{"x-sum", "Content-Type", "X-Other"}, httpio.Header{{Name: "trailer", Value: "x-sum, X-Other"}}, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &Head{Method: "POST", Authority: "example.com", Path: "/up", Header: slices.Clone(fields), Body: tc.body, Trailer: tc.trailer}
			got := RequestH3Head(h)
			want := append(slices.Clone(tc.framing), fields...)
			if !slices.Equal(got.Fields, want) || got.ContentLength != tc.cl {
				t.Fatalf("fields %q cl %d\nwant %q cl %d", got.Fields, got.ContentLength, want, tc.cl)
			}
			// Through the codec: the same fields in the same order, names
			// lower-cased, nothing added, nothing joined.
			back := roundTripH3(t, got)
			if len(back.Fields) != len(want) {
				t.Fatalf("after the codec: %q", back.Fields)
			}
			for i, f := range back.Fields {
				if f.Name != strings.ToLower(want[i].Name) || f.Value != want[i].Value {
					t.Fatalf("after the codec: field %d is %q, want %q", i, f, want[i])
				}
			}
			if back.ContentLength != tc.cl {
				t.Fatalf("after the codec: content length %d", back.ContentLength)
			}
		})
	}
}

func TestConvertHeadFromH3Request(t *testing.T) {
	r := &h3.Head{
		Method: "PUT", Scheme: "https", Authority: "example.com", Path: "/x%2Fy?z",
		Fields: httpio.Header{
			{Name: "b", Value: "2"}, {Name: "a", Value: "1"}, {Name: "content-length", Value: "5"},
			{Name: "trailer", Value: "x-z, content-length, x-y"}, {Name: "a", Value: "3"},
		},
		ContentLength: 5,
	}
	peer := Peer{For: "192.0.2.1:1", By: "[::]:2", Proto: "http3"}
	h := HeadFromH3Request(r, peer)
	if h.Method != "PUT" || h.Authority != "example.com" || h.Path != "/x%2Fy?z" || !slices.Equal(h.Header, r.Fields) ||
		h.Body != (httpio.Framing{Kind: httpio.LengthBody, Length: 5}) || !slices.Equal(h.Trailer, []string{"x-z", "x-y"}) ||
		h.Peer != peer || h.Major != 1 || h.Minor != 1 {
		t.Fatalf("got %+v", h)
	}
	if err := Normalize(h, Policy{Side: ServerSide}); err != nil {
		t.Fatal(err)
	}
	want := httpio.Header{{Name: "b", Value: "2"}, {Name: "a", Value: "1"}, {Name: "a", Value: "3"}}
	if !slices.Equal(h.Header, want) {
		t.Fatalf("normalized %q, want %q", h.Header, want)
	}
	r.ContentLength = -1
	if h := HeadFromH3Request(r, peer); h.Body.Kind != httpio.ChunkedBody {
		t.Fatalf("got %+v", h)
	}
}

func TestConvertHeadFromH3Response(t *testing.T) {
	mk := func(status int, cl int64) *h3.Head {
		f := httpio.Header{{Name: "z", Value: "z"}, {Name: "a", Value: "1"}, {Name: "trailer", Value: "x-t"}, {Name: "a", Value: "2"}}
		if cl >= 0 {
			f = append(httpio.Header{{Name: "content-length", Value: "1234"}}, f...)
		}
		return &h3.Head{Status: status, Fields: f, ContentLength: cl}
	}
	for _, tc := range []struct {
		name   string
		resp   *h3.Head
		method string
		body   httpio.Framing
		keepCL bool
	}{
		{"length", mk(200, 1234), "GET", httpio.Framing{Kind: httpio.LengthBody, Length: 1234}, false},
		{"chunked", mk(200, -1), "GET", httpio.Framing{Kind: httpio.ChunkedBody}, false},
		{"head", mk(200, 1234), "HEAD", httpio.Framing{Kind: httpio.NoBody}, true},
		{"204", mk(204, 1234), "GET", httpio.Framing{Kind: httpio.NoBody}, false},
		{"304", mk(304, 1234), "GET", httpio.Framing{Kind: httpio.NoBody}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := HeadFromH3Response(tc.resp, tc.method)
			if h.Status != tc.resp.Status || h.Body != tc.body || h.Method != tc.method || !slices.Equal(h.Trailer, []string{"x-t"}) {
				t.Fatalf("got %+v", h)
			}
			want := httpio.Header{{Name: "z", Value: "z"}, {Name: "a", Value: "1"}, {Name: "a", Value: "2"}}
			if tc.keepCL {
				want = append(httpio.Header{{Name: "content-length", Value: "1234"}}, want...)
			}
			if !slices.Equal(h.Header, want) {
				t.Fatalf("header %q, want %q", h.Header, want)
			}
		})
	}
	// Fields a peer that is not ptproxy might send and that must not reach
	// the caller's connection.
	h := HeadFromH3Response(&h3.Head{Status: 200, ContentLength: -1, Fields: httpio.Header{
		{Name: "transfer-encoding", Value: "chunked"}, {Name: "connection", Value: "x-secret"}, {Name: "x-secret", Value: "1"}, {Name: "x-ok", Value: "1"},
	}}, "GET")
	if !slices.Equal(h.Header, httpio.Header{{Name: "x-ok", Value: "1"}}) {
		t.Fatalf("hop-by-hop fields kept: %q", h.Header)
	}
}

func TestConvertResponseH3Head(t *testing.T) {
	fields := httpio.Header{{Name: "x-a", Value: "1"}, {Name: "Set-Cookie", Value: "a=1"}, {Name: "set-cookie", Value: "b=2"}}
	got := ResponseH3Head(&Head{Status: 201, Header: fields, Body: httpio.Framing{Kind: httpio.LengthBody, Length: 42}, Trailer: []string{"X-Sum"}})
	want := append(httpio.Header{{Name: "content-length", Value: "42"}}, fields...)
	if got.Status != 201 || got.ContentLength != 42 || !slices.Equal(got.Fields, want) {
		t.Fatalf("got %+v", got)
	}
	got = ResponseH3Head(&Head{Status: 200, Header: fields, Body: httpio.Framing{Kind: httpio.ChunkedBody}, Trailer: []string{"X-Sum", "Expires", "If-Match"}})
	want = append(httpio.Header{{Name: "trailer", Value: "X-Sum, Expires"}}, fields...)
	if got.ContentLength != -1 || !slices.Equal(got.Fields, want) {
		t.Fatalf("got %+v", got)
	}
	// A HEAD answer's Content-Length is metadata, in its place; no Date
	// and no Content-Type are made up.
	meta := httpio.Header{{Name: "ETag", Value: `"x"`}, {Name: "Content-Length", Value: "12"}}
	got = ResponseH3Head(&Head{Status: 200, Method: "HEAD", Header: meta})
	if !slices.Equal(got.Fields, meta) {
		t.Fatalf("got %+v", got)
	}
	got = ResponseH3Head(&Head{Status: 103, Header: httpio.Header{{Name: "Link", Value: "</s.css>"}}})
	if got.Status != 103 || len(got.Fields) != 1 {
		t.Fatalf("got %+v", got)
	}
}

func TestConvertOriginRequestFields(t *testing.T) {
	base := httpio.Header{{Name: "A", Value: "1"}, {Name: "Forwarded", Value: "for=unknown"}}
	for _, tc := range []struct {
		body    httpio.Framing
		trailer []string
		tail    httpio.Header
	}{
		// A bodiless POST gets Content-Length: 0 (RFC 9110 8.6).
		{httpio.Framing{Kind: httpio.NoBody}, nil, httpio.Header{{Name: "Content-Length", Value: "0"}}},
		{httpio.Framing{Kind: httpio.LengthBody, Length: 0}, nil, httpio.Header{{Name: "Content-Length", Value: "0"}}},
		{httpio.Framing{Kind: httpio.LengthBody, Length: 7}, nil, httpio.Header{{Name: "Content-Length", Value: "7"}}},
		{httpio.Framing{Kind: httpio.ChunkedBody}, nil, httpio.Header{{Name: "Transfer-Encoding", Value: "chunked"}}},
		{httpio.Framing{Kind: httpio.ChunkedBody}, []string{"X-A", "X-B"}, httpio.Header{{Name: "Trailer", Value: "X-A, X-B"}, {Name: "Transfer-Encoding", Value: "chunked"}}},
	} {
		got := OriginRequestFields(&Head{Method: "POST", Authority: "example.com:81", Path: "/", Header: base, Body: tc.body, Trailer: tc.trailer})
		want := append(httpio.Header{{Name: "Host", Value: "example.com:81"}}, base...)
		want = append(want, tc.tail...)
		if !slices.Equal(got, want) {
			t.Errorf("%+v: got %q\nwant %q", tc.body, got, want)
		}
	}
	for _, m := range []string{"GET", "HEAD", "DELETE", "OPTIONS"} {
		got := OriginRequestFields(&Head{Method: m, Authority: "h", Path: "/", Header: base})
		if want := append(httpio.Header{{Name: "Host", Value: "h"}}, base...); !slices.Equal(got, want) {
			t.Errorf("bodiless %s: got %q", m, got)
		}
	}
}

func TestConvertCallerResponseFields(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.FixedZone("x", 3600))
	date := httpio.Field{Name: "Date", Value: "Sun, 01 Mar 2026 11:00:00 GMT"}
	length := func(n string) httpio.Field { return httpio.Field{Name: "Content-Length", Value: n} }
	chunked := httpio.Field{Name: "Transfer-Encoding", Value: "chunked"}
	closeF := httpio.Field{Name: "Connection", Value: "close"}
	keep := httpio.Field{Name: "Connection", Value: "keep-alive"}
	a := httpio.Field{Name: "A", Value: "1"}
	for _, tc := range []struct {
		name  string
		h     Head
		close bool
		want  httpio.Header
	}{
		{"length", Head{Status: 200, Header: httpio.Header{a}, Body: httpio.Framing{Kind: httpio.LengthBody, Length: 5}, Major: 1, Minor: 1}, false, httpio.Header{a, date, length("5")}},
		{"date kept", Head{Status: 200, Header: httpio.Header{{Name: "date", Value: "x"}}, Body: httpio.Framing{Kind: httpio.LengthBody, Length: 5}, Major: 1, Minor: 1}, false, httpio.Header{{Name: "date", Value: "x"}, length("5")}},
		{"chunked", Head{Status: 200, Body: httpio.Framing{Kind: httpio.ChunkedBody}, Major: 1, Minor: 1, Trailer: []string{"X-T"}}, false, httpio.Header{date, {Name: "Trailer", Value: "X-T"}, chunked}},
		{"chunked close", Head{Status: 200, Body: httpio.Framing{Kind: httpio.ChunkedBody}, Major: 1, Minor: 1}, true, httpio.Header{date, chunked, closeF}},
		{"chunked 1.0", Head{Status: 200, Body: httpio.Framing{Kind: httpio.ChunkedBody}, Major: 1, Minor: 0, Trailer: []string{"X-T"}}, true, httpio.Header{date, closeF}},
		{"length 1.0 keep-alive", Head{Status: 200, Body: httpio.Framing{Kind: httpio.LengthBody, Length: 1}, Major: 1, Minor: 0}, false, httpio.Header{date, length("1"), keep}},
		{"no body 200", Head{Status: 200, Major: 1, Minor: 1}, false, httpio.Header{date, length("0")}},
		{"head", Head{Status: 200, Method: "HEAD", Header: httpio.Header{length("99")}, Major: 1, Minor: 1}, false, httpio.Header{length("99"), date}},
		{"head chunked", Head{Status: 200, Method: "HEAD", Body: httpio.Framing{Kind: httpio.ChunkedBody}, Major: 1, Minor: 1}, false, httpio.Header{date}},
		{"204", Head{Status: 204, Major: 1, Minor: 1}, false, httpio.Header{date}},
		{"304", Head{Status: 304, Header: httpio.Header{length("99")}, Major: 1, Minor: 1}, false, httpio.Header{length("99"), date}},
		{"no version is 1.1", Head{Status: 200, Body: httpio.Framing{Kind: httpio.ChunkedBody}}, false, httpio.Header{date, chunked}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := CallerResponseFields(&tc.h, now, tc.close)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %q\nwant %q", got, tc.want)
			}
		})
	}
}

// TestCallerFraming pins the one framing decision of the client sink for
// every caller version, body kind and bodiless status or method.
func TestCallerFraming(t *testing.T) {
	chunked, length, none := httpio.Framing{Kind: httpio.ChunkedBody}, httpio.Framing{Kind: httpio.LengthBody, Length: 3}, httpio.Framing{}
	for _, tc := range []struct {
		status       int
		method       string
		body         httpio.Framing
		major, minor int
		want         Frame
	}{
		{200, "GET", chunked, 1, 1, FrameChunked},
		{200, "GET", chunked, 1, 0, FrameClose},
		{200, "GET", length, 1, 0, FrameLength},
		{200, "GET", length, 1, 1, FrameLength},
		{200, "GET", none, 1, 1, FrameLength},
		{200, "GET", none, 1, 0, FrameLength},
		{200, "HEAD", chunked, 1, 0, FrameNone},
		{200, "HEAD", length, 1, 1, FrameNone},
		{204, "GET", chunked, 1, 0, FrameNone},
		{304, "GET", length, 1, 1, FrameNone},
		{103, "GET", none, 1, 1, FrameNone},
		{200, "GET", chunked, 0, 0, FrameChunked}, // no version counts as 1.1
	} {
		h := &Head{Status: tc.status, Method: tc.method, Body: tc.body, Major: tc.major, Minor: tc.minor}
		if got := CallerFraming(h); got != tc.want {
			t.Errorf("CallerFraming(%d %s %v HTTP/%d.%d) = %d, want %d", tc.status, tc.method, tc.body.Kind, tc.major, tc.minor, got, tc.want)
		}
	}
}

// TestConvertRoundTrip runs a head through the client and server
// conversions and the codec: fields in order, duplicates kept (no Cookie
// joining), nothing added.
func TestConvertRoundTrip(t *testing.T) {
	h := &Head{Method: "GET", Authority: "example.com", Path: "//odd/%2F?q", Header: httpio.Header{{Name: "Cookie", Value: "a=1"}, {Name: "X", Value: "1"}, {Name: "cookie", Value: "b=2"}}}
	got := HeadFromH3Request(roundTripH3(t, RequestH3Head(h)), Peer{})
	if got.Path != h.Path || got.Authority != h.Authority || got.Method != "GET" ||
		!slices.Equal(got.Header, httpio.Header{{Name: "cookie", Value: "a=1"}, {Name: "x", Value: "1"}, {Name: "cookie", Value: "b=2"}}) {
		t.Fatalf("got %+v", got)
	}
}
