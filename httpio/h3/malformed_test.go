package h3

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// want is the outcome of reading a message: ok, an *Error with code and
// scope, or an error matching is.
type want struct {
	ok   bool
	code ErrCode
	conn bool
	is   error
}

var (
	ok         = want{ok: true}
	malformed  = want{code: ErrCodeMessageError}
	unexpected = want{code: ErrCodeFrameUnexpected, conn: true}
	frameError = want{code: ErrCodeFrameError, conn: true}
	qpackFail  = want{code: ErrCodeQPACKDecompressionFailed, conn: true}
	tooBig     = want{code: ErrCodeMessageError, is: ErrFieldSectionTooLarge}
	truncated  = want{is: io.ErrUnexpectedEOF}
)

func (w want) check(t *testing.T, err error) {
	t.Helper()
	if w.ok {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("no error, want %+v", w)
	}
	if w.is != nil && !errors.Is(err, w.is) {
		t.Fatalf("error %v is not %v", err, w.is)
	}
	if w.code != 0 {
		e, isH3 := errors.AsType[*Error](err)
		if !isH3 {
			t.Fatalf("error %v (%T) is not an *Error", err, err)
		}
		if e.Code != w.code || e.Conn != w.conn {
			t.Fatalf("error %v: code %v conn %v, want %v conn %v", err, e.Code, e.Conn, w.code, w.conn)
		}
	}
}

type readCase struct {
	name   string
	role   Role
	noBody bool
	in     []byte
	want   want
}

func rawHeaders(payload ...byte) []byte { return frame(frameHeaders, payload) }

var resp200 = []string{":status", "200"}

func readCases() []readCase {
	req := func(name string, in []byte, w want) readCase { return readCase{name, ReadsRequest, false, in, w} }
	rsp := func(name string, in []byte, w want) readCase { return readCase{name, ReadsResponse, false, in, w} }
	long := strings.Repeat("v", 5000)
	cases := []readCase{
		req("valid GET", headers(getReq...), ok),
		req("valid with body and trailers", cat(headers(kv(getReq, "content-length", "3")...), data("abc"), headers("x-t", "1")), ok),
		req("grease everywhere", cat(grease, unknown, headers(getReq...), grease, data("ab"), unknown, data("c"), grease, headers("x-t", "1"), grease, unknown), ok),
		req("zero-length DATA skipped", cat(headers(kv(getReq, "content-length", "1")...), data(""), data("a"), data("")), ok),

		// Section 4.2: names.
		req("uppercase name", headers(kv(getReq, "Foo", "bar")...), malformed),
		req("uppercase pseudo", headers(":METHOD", "GET", ":scheme", "https", ":authority", "a", ":path", "/"), malformed),
		req("name with space", headers(kv(getReq, "a b", "c")...), malformed),
		req("empty name", headers(kv(getReq, "", "c")...), malformed),
		req("value with NUL", headers(kv(getReq, "x", "a\x00b")...), malformed),
		req("value with CRLF", headers(kv(getReq, "x", "a\r\nfoo: b")...), malformed),
		req("connection", headers(kv(getReq, "connection", "close")...), malformed),
		req("keep-alive", headers(kv(getReq, "keep-alive", "5")...), malformed),
		req("proxy-connection", headers(kv(getReq, "proxy-connection", "x")...), malformed),
		req("transfer-encoding", headers(kv(getReq, "transfer-encoding", "chunked")...), malformed),
		req("upgrade", headers(kv(getReq, "upgrade", "websocket")...), malformed),
		req("te trailers", headers(kv(getReq, "te", "trailers")...), ok),
		req("te gzip", headers(kv(getReq, "te", "gzip")...), malformed),

		// Section 4.3: pseudo-fields.
		req("pseudo after regular", headers("x", "1", ":method", "GET", ":scheme", "https", ":authority", "a", ":path", "/"), malformed),
		req("unknown pseudo", headers(kv(getReq, ":foo", "1")...), malformed),
		req("duplicate :path", headers(":method", "GET", ":scheme", "https", ":authority", "a", ":path", "/", ":path", "/b"), malformed),
		req(":status in request", headers(kv(getReq[:0:0], ":status", "200", ":method", "GET", ":scheme", "https", ":authority", "a", ":path", "/")...), malformed),
		req("missing :method", headers(":scheme", "https", ":authority", "a", ":path", "/"), malformed),
		req("missing :scheme", headers(":method", "GET", ":authority", "a", ":path", "/"), malformed),
		req("missing :path", headers(":method", "GET", ":scheme", "https", ":authority", "a"), malformed),
		req("empty :path", headers(":method", "GET", ":scheme", "https", ":authority", "a", ":path", ""), malformed),
		req("empty :authority", headers(":method", "GET", ":scheme", "https", ":authority", "", ":path", "/", "host", "a"), malformed),
		req("bad method", headers(":method", "G T", ":scheme", "https", ":authority", "a", ":path", "/"), malformed),
		req("path without slash", headers(":method", "GET", ":scheme", "https", ":authority", "a", ":path", "x"), malformed),
		req("path with space", headers(":method", "GET", ":scheme", "https", ":authority", "a", ":path", "/a b"), malformed),
		req("path with fragment", headers(":method", "GET", ":scheme", "https", ":authority", "a", ":path", "/a#b"), malformed),
		req("asterisk OPTIONS", headers(":method", "OPTIONS", ":scheme", "https", ":authority", "a", ":path", "*"), ok),
		req("asterisk GET", headers(":method", "GET", ":scheme", "https", ":authority", "a", ":path", "*"), malformed),
		req("userinfo", headers(":method", "GET", ":scheme", "https", ":authority", "u@a", ":path", "/"), malformed),
		req("host only", headers(":method", "GET", ":scheme", "https", ":path", "/", "host", "a:1"), ok),
		req("no authority no host", headers(":method", "GET", ":scheme", "https", ":path", "/"), malformed),
		req("host differs", headers(kv(getReq, "host", "other")...), malformed),
		req("host same", headers(kv(getReq, "host", "example.com")...), ok),
		req("two hosts", headers(":method", "GET", ":scheme", "https", ":path", "/", "host", "a", "host", "a"), malformed),
		req("other scheme", headers(":method", "GET", ":scheme", "ftp", ":path", "x"), ok),
		req("CONNECT", headers(":method", "CONNECT", ":authority", "a:443"), ok),
		req("CONNECT without port", headers(":method", "CONNECT", ":authority", "a"), malformed),
		req("CONNECT without authority", headers(":method", "CONNECT"), malformed),
		req("CONNECT with path", headers(":method", "CONNECT", ":authority", "a:443", ":path", "/"), malformed),
		req("CONNECT with scheme", headers(":method", "CONNECT", ":authority", "a:443", ":scheme", "https"), malformed),
		req("extended CONNECT", headers(":method", "CONNECT", ":protocol", "websocket", ":scheme", "https", ":authority", "a", ":path", "/chat"), ok),
		req("extended CONNECT no authority", headers(":method", "CONNECT", ":protocol", "websocket", ":scheme", "https", ":path", "/chat", "host", "a"), malformed),
		req("extended CONNECT no path", headers(":method", "CONNECT", ":protocol", "websocket", ":scheme", "https", ":authority", "a"), malformed),
		req(":protocol on GET", headers(kv(getReq, ":protocol", "websocket")...), malformed),

		// Content-length (RFC 9110 section 8.6, RFC 9114 section 4.1.2).
		req("content-length letters", headers(kv(getReq, "content-length", "1a")...), malformed),
		req("content-length empty", headers(kv(getReq, "content-length", "")...), malformed),
		req("content-length list", headers(kv(getReq, "content-length", "1, 1")...), malformed),
		req("content-length conflict", headers(kv(getReq, "content-length", "1", "content-length", "2")...), malformed),
		req("content-length repeated", cat(headers(kv(getReq, "content-length", "2", "content-length", "2")...), data("ab")), ok),
		req("body shorter than content-length", cat(headers(kv(getReq, "content-length", "5")...), data("abc")), malformed),
		req("body longer than content-length", cat(headers(kv(getReq, "content-length", "2")...), data("abc")), malformed),
		req("longer over two frames", cat(headers(kv(getReq, "content-length", "2")...), data("ab"), data("c")), malformed),
		req("short with trailers", cat(headers(kv(getReq, "content-length", "5")...), data("abc"), headers("x", "1")), malformed),

		// Trailers.
		req("pseudo in trailers", cat(headers(getReq...), data("a"), headers(":path", "/")), malformed),
		req("content-length in trailers", cat(headers(getReq...), data("a"), headers("content-length", "1")), malformed),
		req("uppercase in trailers", cat(headers(getReq...), headers("X", "1")), malformed),
		req("DATA after trailers", cat(headers(getReq...), headers("x", "1"), data("a")), unexpected),
		req("HEADERS after trailers", cat(headers(getReq...), headers("x", "1"), headers("y", "1")), unexpected),
		req("unknown after trailers", cat(headers(getReq...), headers("x", "1"), unknown, grease), ok),

		// Frames (RFC 9114 sections 4.1, 7.1, 7.2).
		req("empty stream", nil, truncated),
		req("only unknown frames", cat(grease, unknown), truncated),
		req("DATA first", cat(data("a"), headers(getReq...)), unexpected),
		req("SETTINGS", cat(frame(frameSettings, nil), headers(getReq...)), unexpected),
		req("GOAWAY", cat(headers(getReq...), frame(frameGoAway, []byte{0})), unexpected),
		req("MAX_PUSH_ID", cat(headers(getReq...), frame(frameMaxPushID, []byte{0})), unexpected),
		req("CANCEL_PUSH", cat(headers(getReq...), frame(frameCancelPush, []byte{0})), unexpected),
		req("PUSH_PROMISE from client", cat(headers(getReq...), frame(framePushPromise, []byte{0})), unexpected),
		rsp("PUSH_PROMISE to client", cat(frame(framePushPromise, []byte{0}), headers(resp200...)), want{code: ErrCodeIDError, conn: true}),
		req("HTTP/2 PRIORITY", cat(frame(0x02, nil), headers(getReq...)), unexpected),
		req("HTTP/2 PING", cat(headers(getReq...), frame(0x06, nil)), unexpected),
		req("HTTP/2 WINDOW_UPDATE", cat(headers(getReq...), frame(0x08, nil)), unexpected),
		req("HTTP/2 CONTINUATION", cat(headers(getReq...), frame(0x09, nil)), unexpected),
		req("end in frame type", []byte{0x40}, frameError),
		req("end in frame length", []byte{0x01, 0x40}, frameError),
		req("end in HEADERS", headers(getReq...)[:5], frameError),
		req("end in DATA", cat(headers(getReq...), data("abcdef")[:4]), frameError),
		req("end in unknown frame", cat(headers(getReq...), grease[:5]), frameError),
		req("end in DATA header", cat(headers(getReq...), []byte{0x00}), frameError),
		req("huge unknown frame", cat(appendFrameHeader(nil, 0x21, maxSkipFrame+1), headers(getReq...)), want{code: ErrCodeExcessiveLoad}),

		// QPACK (RFC 9204): the static table only.
		req("empty HEADERS", rawHeaders(), qpackFail),
		req("required insert count", rawHeaders(0x01, 0x00, 0xd1), qpackFail),
		req("delta base", rawHeaders(0x00, 0x01, 0xd1), qpackFail),
		req("dynamic indexed", rawHeaders(0x00, 0x00, 0x80), qpackFail),
		req("post-base indexed", rawHeaders(0x00, 0x00, 0x10), qpackFail),
		req("dynamic name ref", rawHeaders(0x00, 0x00, 0x40, 0x01, 'a'), qpackFail),
		req("static index out of range", rawHeaders(0x00, 0x00, 0xff, 0x7f), qpackFail),
		req("truncated literal", rawHeaders(0x00, 0x00, 0x27, 0x03, 'a'), qpackFail),
		req("bad huffman", rawHeaders(0x00, 0x00, 0x5f, 0x1d, 0x81, 0xff), qpackFail),

		// Section 4.2.2: size limit (4096 in these tests).
		// getReq counts 182 (RFC 9114 section 4.2.2), "x" 33 plus its value.
		req("section at limit", headers(kv(getReq, "x", long[:4096-182-33])...), ok),
		req("section one over limit", headers(kv(getReq, "x", long[:4096-182-33+1])...), tooBig),
		req("section over limit", headers(kv(getReq, "x", long[:4096])...), tooBig),
		req("trailers over limit", cat(headers(getReq...), headers("x", long)), tooBig),
		req("HEADERS frame too long", appendFrameHeader(nil, frameHeaders, 4*4096+65), tooBig),

		// Responses.
		rsp("valid 200", cat(headers(resp200...), data("hi")), ok),
		rsp("1xx then final", cat(headers(":status", "100"), grease, headers(":status", "103", "link", "</a>"), headers(resp200...), data("x")), ok),
		rsp("missing :status", headers("x", "1"), malformed),
		rsp("two digits", headers(":status", "20"), malformed),
		rsp("status 600", headers(":status", "600"), malformed),
		rsp("status 099", headers(":status", "099"), malformed),
		rsp("status letters", headers(":status", "2x0"), malformed),
		rsp("status 101", headers(":status", "101"), malformed),
		rsp("duplicate :status", headers(":status", "200", ":status", "200"), malformed),
		rsp("request pseudo", headers(":status", "200", ":method", "GET"), malformed),
		rsp("DATA after 1xx", cat(headers(":status", "100"), data("x"), headers(resp200...)), unexpected),
		rsp("FIN after 1xx", headers(":status", "100"), truncated),
		{"HEAD response with content-length", ReadsResponse, true, headers(":status", "200", "content-length", "10"), ok},
		{"HEAD response with DATA", ReadsResponse, true, cat(headers(resp200...), data("x")), malformed},
		{"HEAD response with empty DATA", ReadsResponse, true, cat(headers(resp200...), data("")), ok},
	}
	return cases
}

func TestReadCases(t *testing.T) {
	for _, tc := range readCases() {
		t.Run(tc.name, func(t *testing.T) {
			for _, chunk := range []int{0, 1, 7} {
				_, err := readBytes(tc.in, tc.role, tc.noBody, chunk)
				tc.want.check(t, err)
			}
		})
	}
}

// TestErrorsAreSticky: after an error every call returns it again, so a
// caller cannot read past a violation.
func TestErrorsAreSticky(t *testing.T) {
	s := &memStream{in: cat(data("x"), headers(getReq...))}
	r := NewReader(s, ReadsRequest, Limits{})
	defer r.Release()
	_, err1 := r.ReadHead()
	_, err2 := r.ReadHead()
	_, err3 := r.ReadData(make([]byte, 10))
	if err1 == nil || err1 != err2 || err2 != err3 {
		t.Fatalf("errors %v, %v, %v", err1, err2, err3)
	}
}

func TestMisuse(t *testing.T) {
	s := &memStream{in: cat(headers(getReq...), data("abc"))}
	r := NewReader(s, ReadsRequest, Limits{})
	defer r.Release()
	if _, err := r.NextData(); err == nil {
		t.Fatal("NextData before ReadHead succeeded")
	}
	if _, err := r.ReadHead(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadHead(); err == nil {
		t.Fatal("second ReadHead on a request succeeded")
	}
	if n, err := r.NextData(); n != 3 || err != nil {
		t.Fatal(n, err)
	}
	if _, err := r.NextData(); err == nil {
		t.Fatal("NextData with unread payload succeeded")
	}
}

// TestHeadContents: what ReadHead reports beyond validity.
func TestHeadContents(t *testing.T) {
	in := cat(headers(":method", "POST", ":scheme", "https", ":authority", "example.com:8443", ":path", "/p",
		"cookie", "a=1", "content-length", "4", "cookie", "b=2", "x-empty", ""), data("body"))
	m, err := readBytes(in, ReadsRequest, false, 0)
	if err != nil {
		t.Fatal(err)
	}
	h := m.heads[0]
	if h.Method != "POST" || h.Scheme != "https" || h.Authority != "example.com:8443" || h.Path != "/p" || h.Protocol != "" || h.Status != 0 {
		t.Fatalf("pseudo-fields %+v", h)
	}
	if h.ContentLength != 4 {
		t.Fatalf("ContentLength %d", h.ContentLength)
	}
	got := ""
	for _, f := range h.Fields {
		got += f.Name + "=" + f.Value + ";"
	}
	if got != "cookie=a=1;content-length=4;cookie=b=2;x-empty=;" {
		t.Fatalf("fields %q", got)
	}
	m, err = readBytes(headers(getReq...), ReadsRequest, false, 0)
	if err != nil || m.heads[0].ContentLength != -1 || m.trailers != nil {
		t.Fatalf("%+v %v", m, err)
	}
}

func TestUnknownFrameNotBuffered(t *testing.T) {
	// A 1 MiB unknown frame passes through a Reader whose buffer is far
	// smaller; skipping reads and drops.
	big := frame(0x21+0x1f, bytes.Repeat([]byte{'g'}, maxSkipFrame))
	m, err := readBytes(cat(headers(getReq...), big, data("z")), ReadsRequest, false, 0)
	if err != nil || len(m.frames) != 1 || string(m.frames[0]) != "z" {
		t.Fatalf("%v %v", m.frames, err)
	}
}
