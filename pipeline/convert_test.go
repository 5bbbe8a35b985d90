package pipeline

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/ptproxy/ptproxy/httpio"
)

// TestConvertRequestURI checks that the :path quic-go sends (its
// encodeHeaders logic, mirrored by rwEncodeRequest) is the caller's target
// byte for byte, and that url.URL.RequestURI() itself reproduces it except
// for the "//" fallback.
func TestConvertRequestURI(t *testing.T) {
	for _, tc := range []struct {
		method, target string
		exactURI       bool // RequestURI() == target
	}{
		{"GET", "/", true},
		{"GET", "/a/b", true},
		{"GET", "//a", true},
		{"GET", "//a//b?x=//y", true},
		{"GET", "/a%2Fb", true},
		{"GET", "/a%2fb/%7E", true},
		{"GET", "/a?b=c&d", true},
		{"GET", "/?", true},
		{"GET", "/a?", true},
		{"GET", "/a??b", true},
		{"GET", "/a/../b/./c", true},
		{"GET", "/a b", true}, // not valid HTTP, but not ours to fix
		{"GET", "/%zz?%zz", true},
		{"GET", "//%zz", false}, // unescapable: the Opaque fallback
		{"GET", `//a"b`, false}, // url would re-escape '"'
		{"GET", "/a#frag", true},
		{"OPTIONS", "*", true},
		{"GET", "/@user:pass", true},
		{"GET", "/;p=1;q", true},
	} {
		h := &Head{Method: tc.method, Authority: "example.com:8443", Path: tc.target}
		req := HTTP3Request(t.Context(), h)
		if req.Host != "example.com:8443" || req.URL.Host != "example.com:8443" || req.URL.Scheme != "https" {
			t.Errorf("%q: host %q url host %q scheme %q", tc.target, req.Host, req.URL.Host, req.URL.Scheme)
		}
		if got := req.URL.RequestURI(); tc.exactURI && got != tc.target {
			t.Errorf("%q: RequestURI() = %q", tc.target, got)
		}
		fields, err := rwEncodeRequest(req)
		if err != nil {
			t.Errorf("%q: %v", tc.target, err)
			continue
		}
		if fields[2].name != ":path" || fields[2].value != tc.target {
			t.Errorf("%q: quic-go would send %v", tc.target, fields[2])
		}
	}
}

func TestConvertHTTP3Request(t *testing.T) {
	h := &Head{
		Method: "POST", Authority: "example.com", Path: "/up",
		Header: httpio.Header{
			{Name: "x-a", Value: "1"}, {Name: "Accept", Value: "a"}, {Name: "X-A", Value: "2"},
			{Name: "Host", Value: "ignored"}, {Name: "Content-Length", Value: "99"},
		},
		Body:    httpio.Framing{Kind: httpio.ChunkedBody},
		Trailer: []string{"x-sum", "X-Other"},
	}
	req := HTTP3Request(t.Context(), h)
	if req.Body != nil || req.ContentLength != -1 || req.Method != "POST" || req.Context() != t.Context() {
		t.Fatalf("got %+v", req)
	}
	if !slices.Equal(req.Header["X-A"], []string{"1", "2"}) || req.Header.Get("Accept") != "a" {
		t.Fatalf("header %v", req.Header)
	}
	if _, ok := req.Header["Host"]; ok {
		t.Fatal("Host in header map")
	}
	if _, ok := req.Header["Content-Length"]; ok {
		t.Fatal("Content-Length in header map")
	}
	if ua, ok := req.Header["User-Agent"]; !ok || len(ua) != 0 {
		t.Fatalf("User-Agent %q, %v: quic-go would add its own", ua, ok)
	}
	if len(req.Trailer) != 2 || req.Trailer["X-Sum"] != nil || !hasKey(req.Trailer, "X-Sum") || !hasKey(req.Trailer, "X-Other") {
		t.Fatalf("trailer %v", req.Trailer)
	}
	for _, tc := range []struct {
		f  httpio.Framing
		cl int64
	}{
		{httpio.Framing{Kind: httpio.NoBody}, 0},
		{httpio.Framing{Kind: httpio.LengthBody, Length: 0}, 0},
		{httpio.Framing{Kind: httpio.LengthBody, Length: 12}, 12},
		{httpio.Framing{Kind: httpio.ChunkedBody}, -1},
	} {
		r := HTTP3Request(t.Context(), &Head{Method: "GET", Authority: "h", Path: "/", Body: tc.f, Header: httpio.Header{{Name: "User-Agent", Value: "me"}}})
		if r.ContentLength != tc.cl || r.Trailer != nil || !slices.Equal(r.Header["User-Agent"], []string{"me"}) {
			t.Errorf("%+v: ContentLength %d trailer %v UA %q", tc.f, r.ContentLength, r.Trailer, r.Header["User-Agent"])
		}
	}
}

func hasKey(h http.Header, k string) bool { _, ok := h[k]; return ok }

func TestConvertHeadFromHTTP3Request(t *testing.T) {
	r := httptest.NewRequest("PUT", "https://example.com/x%2Fy?z", nil)
	r.RequestURI = "/x%2Fy?z"
	r.Host = "example.com"
	r.Header = http.Header{"B": {"2"}, "A": {"1", "3"}, "Content-Length": {"5"}}
	r.ContentLength = 5
	r.Trailer = http.Header{"X-Z": nil, "X-Y": nil}
	peer := Peer{For: "192.0.2.1:1", By: "[::]:2", Proto: "http3"}
	h := HeadFromHTTP3Request(r, peer)
	want := httpio.Header{{Name: "A", Value: "1"}, {Name: "A", Value: "3"}, {Name: "B", Value: "2"}}
	if h.Method != "PUT" || h.Authority != "example.com" || h.Path != "/x%2Fy?z" || !slices.Equal(h.Header, want) ||
		h.Body != (httpio.Framing{Kind: httpio.LengthBody, Length: 5}) || !slices.Equal(h.Trailer, []string{"X-Y", "X-Z"}) ||
		h.Peer != peer || h.Major != 1 || h.Minor != 1 {
		t.Fatalf("got %+v", h)
	}
	r.ContentLength = -1
	r.RequestURI = ""
	if h := HeadFromHTTP3Request(r, peer); h.Body.Kind != httpio.ChunkedBody || h.Path != "/x%2Fy?z" {
		t.Fatalf("got %+v", h)
	}
}

func TestConvertHeadFromHTTP3Response(t *testing.T) {
	mk := func(status int, cl int64) *http.Response {
		hdr := http.Header{"Z": {"z"}, "A": {"1", "2"}}
		if cl >= 0 {
			hdr.Set("Content-Length", "1234")
		}
		return &http.Response{StatusCode: status, ContentLength: cl, Header: hdr, Trailer: http.Header{"X-T": nil}}
	}
	for _, tc := range []struct {
		name   string
		resp   *http.Response
		method string
		body   httpio.Framing
		keepCL bool
	}{
		{"length", mk(200, 1234), "GET", httpio.Framing{Kind: httpio.LengthBody, Length: 1234}, false},
		{"chunked", mk(200, -1), "GET", httpio.Framing{Kind: httpio.ChunkedBody}, false},
		{"head", mk(200, 1234), "HEAD", httpio.Framing{Kind: httpio.NoBody}, true},
		{"204", mk(204, 1234), "GET", httpio.Framing{Kind: httpio.NoBody}, false},
		{"304", mk(304, 1234), "GET", httpio.Framing{Kind: httpio.NoBody}, true},
		{"103", mk(103, -1), "GET", httpio.Framing{Kind: httpio.NoBody}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := HeadFromHTTP3Response(tc.resp, tc.method)
			if h.Status != tc.resp.StatusCode || h.Body != tc.body || h.Method != tc.method || !slices.Equal(h.Trailer, []string{"X-T"}) {
				t.Fatalf("got %+v", h)
			}
			if h.Header.Has("Content-Length") != tc.keepCL {
				t.Fatalf("Content-Length kept = %v, want %v", h.Header.Has("Content-Length"), tc.keepCL)
			}
			if h.Header[0] != (httpio.Field{Name: "A", Value: "1"}) || h.Header[1] != (httpio.Field{Name: "A", Value: "2"}) {
				t.Fatalf("header %q", h.Header)
			}
		})
	}
}

func TestConvertWriteHTTP3ResponseHead(t *testing.T) {
	rec := httptest.NewRecorder()
	rec.Header().Set("X-Left-Over", "from an interim head")
	WriteHTTP3ResponseHead(rec, &Head{
		Status:  201,
		Header:  httpio.Header{{Name: "x-a", Value: "1"}, {Name: "Set-Cookie", Value: "a=1"}, {Name: "set-cookie", Value: "b=2"}},
		Body:    httpio.Framing{Kind: httpio.LengthBody, Length: 42},
		Trailer: []string{"X-Sum", "X-Two"},
	})
	hdr := rec.Header()
	if rec.Code != 201 {
		t.Fatalf("status %d", rec.Code)
	}
	if hdr.Get("X-A") != "1" || !slices.Equal(hdr["Set-Cookie"], []string{"a=1", "b=2"}) || hdr.Get("Content-Length") != "42" ||
		hdr.Get("Trailer") != "X-Sum, X-Two" || hdr.Get("X-Left-Over") != "" {
		t.Fatalf("header %v", hdr)
	}
	for _, k := range []string{"Date", "Content-Type"} {
		if v, ok := hdr[k]; !ok || v != nil {
			t.Errorf("%s = %q, %v: want a nil value to stop http3 adding one", k, v, ok)
		}
	}
	rec = httptest.NewRecorder()
	WriteHTTP3ResponseHead(rec, &Head{Status: 200, Header: httpio.Header{{Name: "Date", Value: "d"}, {Name: "Content-Type", Value: "t"}}, Body: httpio.Framing{Kind: httpio.ChunkedBody}})
	if rec.Header().Get("Date") != "d" || rec.Header().Get("Content-Type") != "t" || hasKey(rec.Header(), "Content-Length") || hasKey(rec.Header(), "Trailer") {
		t.Fatalf("header %v", rec.Header())
	}
}

func TestConvertOriginRequestFields(t *testing.T) {
	base := httpio.Header{{Name: "A", Value: "1"}, {Name: "Forwarded", Value: "for=unknown"}}
	for _, tc := range []struct {
		body    httpio.Framing
		trailer []string
		tail    httpio.Header
	}{
		{httpio.Framing{Kind: httpio.NoBody}, nil, nil},
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
// conversions with the quic-go mirrors of rewrite_test.go.
func TestConvertRoundTrip(t *testing.T) {
	h := &Head{Method: "GET", Authority: "example.com", Path: "//odd/%2F?q", Header: httpio.Header{{Name: "Cookie", Value: "a=1"}, {Name: "X", Value: "1"}, {Name: "cookie", Value: "b=2"}}}
	req := HTTP3Request(t.Context(), h)
	fields, err := rwEncodeRequest(req)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fields {
		if f.name == "user-agent" {
			t.Fatalf("user-agent sent: %v", fields)
		}
	}
	sreq, err := rwServerRequest(fields)
	if err != nil {
		t.Fatal(err)
	}
	got := HeadFromHTTP3Request(sreq, Peer{})
	if got.Path != h.Path || got.Authority != h.Authority || got.Method != "GET" ||
		!slices.Equal(got.Header, httpio.Header{{Name: "Cookie", Value: "a=1; b=2"}, {Name: "X", Value: "1"}}) {
		t.Fatalf("got %+v", got)
	}
}
