package httpio

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// readAllRequest reads one request head and its whole body.
func readAllRequest(in string, lim Limits) (*Request, []byte, Header, error) {
	r := NewReader(strings.NewReader(in), lim)
	defer r.Release()
	var req Request
	if err := r.ReadRequest(&req); err != nil {
		return nil, nil, nil, err
	}
	body, err := readBody(r)
	return &req, body, r.Trailers().Clone(), err
}

// readAllResponse reads one response head and its whole body.
func readAllResponse(in, method string) (*Response, []byte, error) {
	r := NewReader(strings.NewReader(in), Limits{})
	defer r.Release()
	var resp Response
	if err := r.ReadResponse(&resp, method); err != nil {
		return nil, nil, err
	}
	body, err := readBody(r)
	return &resp, body, err
}

// readBody reads a body to io.EOF with a small buffer, so chunks are split.
func readBody(r *Reader) ([]byte, error) {
	var out []byte
	p := make([]byte, 7)
	for {
		n, _, err := r.ReadBody(p)
		out = append(out, p[:n]...)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}

type badCase struct {
	name   string // RFC section first
	in     string
	kind   ErrorKind
	status int
}

const host = "Host: example.com\r\n"

// badRequests lists one or more cases per rule. The body is read to EOF, so
// chunked-coding errors show up too.
var badRequests = []badCase{
	// Request line (RFC 9112 3).
	{"9112-3 no SP", "GET\r\n" + host + "\r\n", ErrBadRequestLine, 400},
	{"9112-3 double SP after method", "GET  / HTTP/1.1\r\n" + host + "\r\n", ErrBadRequestLine, 400},
	{"9112-3 double SP before version", "GET /  HTTP/1.1\r\n" + host + "\r\n", ErrBadRequestLine, 400},
	{"9112-3 trailing SP", "GET / HTTP/1.1 \r\n" + host + "\r\n", ErrBadRequestLine, 400},
	{"9112-3 leading SP", " GET / HTTP/1.1\r\n" + host + "\r\n", ErrBadRequestLine, 400},
	{"9112-3 HTAB separator", "GET\t/ HTTP/1.1\r\n" + host + "\r\n", ErrBadMethod, 400},
	{"9112-2.3 HTTP/0.9 simple request", "GET /\r\n\r\n", ErrBadRequestLine, 400},
	{"9110-9.1 method not a token", "G(T / HTTP/1.1\r\n" + host + "\r\n", ErrBadMethod, 400},
	{"9110-9.1 method with UTF-8", "GÉT / HTTP/1.1\r\n" + host + "\r\n", ErrBadMethod, 400},
	{"9112-2.3 lower-case version", "GET / http/1.1\r\n" + host + "\r\n", ErrBadVersion, 400},
	{"9112-2.3 version two digits", "GET / HTTP/1.10\r\n" + host + "\r\n", ErrBadVersion, 400},
	{"9112-2.3 version no minor", "GET / HTTP/1\r\n" + host + "\r\n", ErrBadVersion, 400},
	{"9110-15.6.6 HTTP/2.0", "GET / HTTP/2.0\r\n" + host + "\r\n", ErrUnsupportedVersion, 505},
	{"9110-15.6.6 HTTP/0.9 with version", "GET / HTTP/0.9\r\n" + host + "\r\n", ErrUnsupportedVersion, 505},
	{"9110-15.6.6 h2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", ErrUnsupportedVersion, 505},
	{"9112-3 request-line too long", "GET /" + strings.Repeat("a", DefaultMaxLineBytes) + " HTTP/1.1\r\n" + host + "\r\n", ErrLineTooLong, 414},
	{"9112-3 request-line too long, no LF yet", "GET /" + strings.Repeat("a", 2*DefaultMaxLineBytes), ErrLineTooLong, 414},
	{"9112-2.2 too many empty lines", strings.Repeat("\r\n", 5) + "GET / HTTP/1.1\r\n" + host + "\r\n", ErrTooManyEmptyLines, 400},
	{"9112-2.2 empty line with bare LF", "\nGET / HTTP/1.1\r\n" + host + "\r\n", ErrBareLF, 400},

	// Request target (RFC 9112 3.2).
	{"9112-3.2 fragment", "GET /a#frag HTTP/1.1\r\n" + host + "\r\n", ErrBadTarget, 400},
	{"9112-3.2 raw UTF-8", "GET /caf\xc3\xa9 HTTP/1.1\r\n" + host + "\r\n", ErrBadTarget, 400},
	{"9112-3.2 raw 0x7f", "GET /a\x7f HTTP/1.1\r\n" + host + "\r\n", ErrBadTarget, 400},
	{"9112-3.2 CTL in target", "GET /a\x01b HTTP/1.1\r\n" + host + "\r\n", ErrBadTarget, 400},
	{"9112-3.2 HTAB in target", "GET /a\tb HTTP/1.1\r\n" + host + "\r\n", ErrBadTarget, 400},
	{"3986-2.1 bad percent-encoding", "GET /a%zz HTTP/1.1\r\n" + host + "\r\n", ErrBadTarget, 400},
	{"3986-2.1 truncated percent-encoding", "GET /a%2 HTTP/1.1\r\n" + host + "\r\n", ErrBadTarget, 400},
	{"9112-3.2.4 asterisk with GET", "GET * HTTP/1.1\r\n" + host + "\r\n", ErrBadTarget, 400},
	{"9112-3.2.3 CONNECT with origin-form", "CONNECT /x HTTP/1.1\r\n" + host + "\r\n", ErrBadTarget, 400},
	{"9112-3.2.3 CONNECT without port", "CONNECT example.com HTTP/1.1\r\n" + host + "\r\n", ErrBadTarget, 400},
	{"9112-3.2.3 authority-form with GET", "GET example.com:443 HTTP/1.1\r\n" + host + "\r\n", ErrBadTarget, 400},
	{"9112-3.2.2 ftp scheme", "GET ftp://example.com/ HTTP/1.1\r\n" + host + "\r\n", ErrBadTarget, 400},
	{"9112-3.2.2 userinfo", "GET http://user:pw@example.com/ HTTP/1.1\r\n" + host + "\r\n", ErrBadTarget, 400},
	{"9112-3.2.2 userinfo confusion", "GET http://example.com@evil.com/ HTTP/1.1\r\n" + host + "\r\n", ErrBadTarget, 400},
	{"9112-3.2.2 empty host", "GET http:///a HTTP/1.1\r\n" + host + "\r\n", ErrBadTarget, 400},
	{"9112-3.2.2 bad port", "GET http://example.com:8x/ HTTP/1.1\r\n" + host + "\r\n", ErrBadTarget, 400},
	{"9112-3.2.2 IPv6 zone", "GET http://[fe80::1%25eth0]/ HTTP/1.1\r\n" + host + "\r\n", ErrBadTarget, 400},
	{"9112-3.2 relative target", "GET a/b HTTP/1.1\r\n" + host + "\r\n", ErrBadTarget, 400},

	// Host (RFC 9112 3.2, RFC 9110 7.2).
	{"9112-3.2 missing Host", "GET / HTTP/1.1\r\n\r\n", ErrMissingHost, 400},
	{"9112-3.2 missing Host with absolute-form", "GET http://example.com/ HTTP/1.1\r\n\r\n", ErrMissingHost, 400},
	{"9112-3.2 duplicate Host", "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", ErrDuplicateHost, 400},
	{"9112-3.2 duplicate Host HTTP/1.0", "GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n", ErrDuplicateHost, 400},
	{"9110-7.2 Host with userinfo", "GET / HTTP/1.1\r\nHost: u@example.com\r\n\r\n", ErrBadHost, 400},
	{"9110-7.2 Host with path", "GET / HTTP/1.1\r\nHost: example.com/a\r\n\r\n", ErrBadHost, 400},
	{"9110-7.2 Host with space", "GET / HTTP/1.1\r\nHost: exa mple.com\r\n\r\n", ErrBadHost, 400},
	{"9110-7.2 Host list", "GET / HTTP/1.1\r\nHost: a, b\r\n\r\n", ErrBadHost, 400},
	{"9110-7.2 Host bad IPv6", "GET / HTTP/1.1\r\nHost: [::g]\r\n\r\n", ErrBadHost, 400},
	{"9110-7.2 Host long port", "GET / HTTP/1.1\r\nHost: a:123456\r\n\r\n", ErrBadHost, 400},

	// Field lines (RFC 9112 5, RFC 9110 5).
	{"9112-5.1 space before colon", "GET / HTTP/1.1\r\n" + host + "Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", ErrBadFieldName, 400},
	{"9112-5.1 tab before colon", "GET / HTTP/1.1\r\n" + host + "Foo\t: bar\r\n\r\n", ErrBadFieldName, 400},
	{"9112-5.1 no colon", "GET / HTTP/1.1\r\n" + host + "Foo bar\r\n\r\n", ErrBadFieldName, 400},
	{"9112-5.1 empty name", "GET / HTTP/1.1\r\n" + host + ": bar\r\n\r\n", ErrBadFieldName, 400},
	{"9110-5.1 name not a token", "GET / HTTP/1.1\r\n" + host + "Fo(o: bar\r\n\r\n", ErrBadFieldName, 400},
	{"9112-5.2 obs-fold", "GET / HTTP/1.1\r\n" + host + "Foo: a\r\n b\r\n\r\n", ErrObsFold, 400},
	{"9112-5.2 TE with obs-fold", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", ErrObsFold, 400},
	{"9112-2.2 whitespace before first field", "GET / HTTP/1.1\r\n " + host + "\r\n", ErrObsFold, 400},
	{"9110-5.5 NUL in value", "GET / HTTP/1.1\r\n" + host + "Foo: a\x00b\r\n\r\n", ErrBadFieldValue, 400},
	{"9110-5.5 CTL in value", "GET / HTTP/1.1\r\n" + host + "Foo: a\x1bb\r\n\r\n", ErrBadFieldValue, 400},
	{"9110-5.5 DEL in value", "GET / HTTP/1.1\r\n" + host + "Foo: a\x7fb\r\n\r\n", ErrBadFieldValue, 400},
	{"9112-2.2 bare CR in value", "GET / HTTP/1.1\r\n" + host + "Foo: a\rb\r\n\r\n", ErrBareCR, 400},
	{"9112-2.2 bare CR in request-line", "GET /\r HTTP/1.1\r\n" + host + "\r\n", ErrBareCR, 400},
	{"9112-2.2 bare CR as line end", "GET / HTTP/1.1\r\n" + host + "Foo: a\rX: b\r\n\r\n", ErrBareCR, 400},
	{"9112-2.2 bare LF request-line", "GET / HTTP/1.1\n" + host + "\r\n", ErrBareLF, 400},
	{"9112-2.2 only-LF lines", "GET / HTTP/1.1\nHost: example.com\n\n", ErrBareLF, 400},
	{"9112-2.2 bare LF field line", "GET / HTTP/1.1\r\nHost: example.com\nFoo: bar\r\n\r\n", ErrBareLF, 400},
	{"9112-2.2 bare LF final line", "GET / HTTP/1.1\r\n" + host + "\n", ErrBareLF, 400},
	{"6585-5 too many fields", "GET / HTTP/1.1\r\n" + host + strings.Repeat("A: b\r\n", DefaultMaxHeaderCount) + "\r\n", ErrTooManyFields, 431},
	{"6585-5 header too large", "GET / HTTP/1.1\r\n" + host + "A: " + strings.Repeat("b", DefaultMaxHeaderBytes) + "\r\n\r\n", ErrHeaderTooLarge, 431},
	{"6585-5 header too large, no LF yet", "GET / HTTP/1.1\r\n" + host + "A: " + strings.Repeat("b", 2*DefaultMaxHeaderBytes), ErrHeaderTooLarge, 431},
	{"9112-5 EOF in head", "GET / HTTP/1.1\r\nHost: a\r\n", ErrUnexpectedEOF, 400},
	{"9112-3 EOF in request-line", "GET / HTT", ErrUnexpectedEOF, 400},

	// Framing (RFC 9112 6).
	{"9112-6.1 CL and TE together (CL.TE)", "POST / HTTP/1.1\r\n" + host + "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG", ErrLengthAndChunked, 400},
	{"9112-6.1 TE and CL together (TE.CL)", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\nGPOST / HTTP/1.1\r\n\r\n0\r\n\r\n", ErrLengthAndChunked, 400},
	{"9112-6.1 xchunked", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", ErrUnsupportedTransferCoding, 400},
	{"9112-6.1 gzip", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: gzip\r\n\r\n", ErrUnsupportedTransferCoding, 400},
	{"9112-6.1 gzip, chunked", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", ErrUnsupportedTransferCoding, 400},
	{"9112-6.1 chunked, chunked", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", ErrUnsupportedTransferCoding, 400},
	{"9112-6.1 chunked, empty element", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked,\r\n\r\n0\r\n\r\n", ErrUnsupportedTransferCoding, 400},
	{"9112-6.1 empty TE", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: \r\n\r\n", ErrUnsupportedTransferCoding, 400},
	{"9112-6.1 two TE fields", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", ErrUnsupportedTransferCoding, 400},
	{"9112-6.1 chunked with parameter", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked;foo\r\n\r\n0\r\n\r\n", ErrUnsupportedTransferCoding, 400},
	{"9112-6.1 identity", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: identity\r\n\r\n", ErrUnsupportedTransferCoding, 400},
	{"9112-6.1 TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", ErrUnsupportedTransferCoding, 400},
	{"9112-6.1 TE in HTTP/1.0 with CL", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", ErrUnsupportedTransferCoding, 400},
	{"9110-8.6 CL sign", "POST / HTTP/1.1\r\n" + host + "Content-Length: +5\r\n\r\nhello", ErrBadContentLength, 400},
	{"9110-8.6 CL negative", "POST / HTTP/1.1\r\n" + host + "Content-Length: -1\r\n\r\n", ErrBadContentLength, 400},
	{"9110-8.6 CL hex", "POST / HTTP/1.1\r\n" + host + "Content-Length: 0x5\r\n\r\nhello", ErrBadContentLength, 400},
	{"9110-8.6 CL inner space", "POST / HTTP/1.1\r\n" + host + "Content-Length: 1 0\r\n\r\n0123456789", ErrBadContentLength, 400},
	{"9110-8.6 CL empty", "POST / HTTP/1.1\r\n" + host + "Content-Length: \r\n\r\n", ErrBadContentLength, 400},
	{"9110-8.6 CL overflow", "POST / HTTP/1.1\r\n" + host + "Content-Length: 9223372036854775808\r\n\r\n", ErrBadContentLength, 400},
	{"9110-8.6 CL list (net/http rejects)", "POST / HTTP/1.1\r\n" + host + "Content-Length: 5, 5\r\n\r\nhello", ErrBadContentLength, 400},
	{"9110-8.6 CL list differing", "POST / HTTP/1.1\r\n" + host + "Content-Length: 5, 6\r\n\r\nhello", ErrBadContentLength, 400},
	{"9112-6.3 CL fields differing", "POST / HTTP/1.1\r\n" + host + "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello", ErrBadContentLength, 400},
	{"9112-6.3 CL fields differing leading zero", "POST / HTTP/1.1\r\n" + host + "Content-Length: 5\r\nContent-Length: 05\r\n\r\nhello", ErrBadContentLength, 400},
	{"9112-6.3 CL body truncated", "POST / HTTP/1.1\r\n" + host + "Content-Length: 10\r\n\r\nhello", ErrUnexpectedEOF, 400},
	{"9110-6.6.2 Trailer announces CL", "POST / HTTP/1.1\r\n" + host + "Trailer: Content-Length\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", ErrTrailer, 400},

	// Chunked coding (RFC 9112 7.1).
	{"9112-7.1 chunk size 0x10", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n0x10\r\n0123456789abcdef\r\n0\r\n\r\n", ErrBadChunk, 400},
	{"9112-7.1 chunk size +10", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n+10\r\n0123456789abcdef\r\n0\r\n\r\n", ErrBadChunk, 400},
	{"9112-7.1 chunk size 1 0", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n1 0\r\n0123456789abcdef\r\n0\r\n\r\n", ErrBadChunk, 400},
	{"9112-7.1 chunk size -1", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n-1\r\n\r\n", ErrBadChunk, 400},
	{"9112-7.1 chunk size empty", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n\r\n\r\n", ErrBadChunk, 400},
	{"9112-7.1 chunk size overflow", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\na\r\n0\r\n\r\n", ErrBadChunk, 400},
	{"9112-7.1 chunk size 16 digits", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n0000000000000001\r\na\r\n0\r\n\r\n", ErrBadChunk, 400},
	{"9112-7.1 chunk size trailing space", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n1 \r\na\r\n0\r\n\r\n", ErrBadChunk, 400},
	{"9112-7.1 chunk size bare LF", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n1\na\r\n0\r\n\r\n", ErrBareLF, 400},
	{"9112-7.1 chunk size bare CR", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n1\r;a\r\na\r\n0\r\n\r\n", ErrBareCR, 400},
	{"9112-7.1 chunk data not followed by CRLF", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n1\r\nab\r\n0\r\n\r\n", ErrBadChunk, 400},
	{"9112-7.1 chunk data followed by LF", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n1\r\na\n0\r\n\r\n", ErrBadChunk, 400},
	{"9112-7.1.1 BWS before first ; (net/http rejects)", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n1 ;a\r\na\r\n0\r\n\r\n", ErrBadChunk, 400},
	{"9112-7.1.1 extension without name", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n1;\r\na\r\n0\r\n\r\n", ErrBadChunk, 400},
	{"9112-7.1.1 extension junk", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n1;a=b c\r\na\r\n0\r\n\r\n", ErrBadChunk, 400},
	{"9112-7.1.1 extension unterminated quote", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n1;a=\"b\r\na\r\n0\r\n\r\n", ErrBadChunk, 400},
	{"9112-7.1.1 extension empty value", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n1;a=\r\na\r\n0\r\n\r\n", ErrBadChunk, 400},
	{"9112-7.1.1 chunk line too long", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n1;a=" + strings.Repeat("b", 5000) + "\r\na\r\n0\r\n\r\n", ErrBadChunk, 400},
	{"9112-7.1.1 extension flood", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n" + strings.Repeat("1;a="+strings.Repeat("b", 3000)+"\r\na\r\n", 8) + "0\r\n\r\n", ErrBadChunk, 400},
	{"9112-7.1 EOF in chunk data", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n5\r\nab", ErrUnexpectedEOF, 400},
	{"9112-7.1 EOF after chunk data", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n2\r\nab", ErrUnexpectedEOF, 400},
	{"9112-7.1 EOF in chunk line", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n5", ErrUnexpectedEOF, 400},
	{"9112-7.1 EOF before last chunk", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n", ErrUnexpectedEOF, 400},
	{"9112-7.1.2 EOF in trailers", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n0\r\nA: b\r\n", ErrUnexpectedEOF, 400},
	{"9112-7.1.2 EOF after last chunk", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n0\r\n", ErrUnexpectedEOF, 400},
	{"9110-6.5.1 CL in trailer", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 5\r\n\r\n", ErrTrailer, 400},
	{"9110-6.5.1 TE in trailer", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n0\r\ntransfer-encoding: chunked\r\n\r\n", ErrTrailer, 400},
	{"9110-6.5.1 Host in trailer", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n0\r\nHost: evil\r\n\r\n", ErrTrailer, 400},
	{"9112-7.1.2 obs-fold in trailer", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n0\r\nA: b\r\n c\r\n\r\n", ErrObsFold, 400},
	{"9112-7.1.2 NUL in trailer", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n0\r\nA: \x00\r\n\r\n", ErrBadFieldValue, 400},
	{"9112-7.1.2 bare LF in trailer", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n0\r\nA: b\n\r\n", ErrBareLF, 400},
	{"9112-7.1.2 trailer end bare LF", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n0\r\n\n", ErrBareLF, 400},
	{"6585-5 trailers too many", "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n0\r\n" + strings.Repeat("A: b\r\n", DefaultMaxHeaderCount+1) + "\r\n", ErrTooManyFields, 431},
}

func checkErr(t *testing.T, err error, kind ErrorKind, status int) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("err = %v (%T), want *Error %v", err, err, kind)
	}
	if e.Kind != kind || e.Status != status {
		t.Fatalf("err = %v (kind %d status %d), want kind %q status %d", e, e.Kind, e.Status, kind, status)
	}
	if e.Detail == "" || len(e.Error()) > 400 {
		t.Fatalf("detail missing or unbounded: %q", e.Error())
	}
}

func TestReadRequestErrors(t *testing.T) {
	for _, tc := range badRequests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, _, err := readAllRequest(tc.in, Limits{})
			checkErr(t, err, tc.kind, tc.status)
		})
	}
}

// TestErrorSticky: after an *Error every call fails, the stream is out of sync.
func TestErrorSticky(t *testing.T) {
	r := NewReader(strings.NewReader("GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), Limits{})
	var req Request
	err1 := r.ReadRequest(&req)
	err2 := r.ReadRequest(&req)
	if err1 == nil || err1 != err2 {
		t.Fatalf("errors %v, %v", err1, err2)
	}
}

type goodCase struct {
	name    string
	in      string
	method  string
	target  string
	form    TargetForm
	minor   int
	host    string
	path    string
	scheme  string
	header  Header
	body    Framing
	data    string
	trailer Header
}

var goodRequests = []goodCase{
	{name: "9112-3 simple GET", in: "GET /a?b=c HTTP/1.1\r\nHost: example.com\r\n\r\n",
		method: "GET", target: "/a?b=c", minor: 1, host: "example.com", path: "/a?b=c",
		header: Header{{"Host", "example.com"}}},
	{name: "9112-2.2 leading empty lines ignored", in: "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
		method: "GET", target: "/", minor: 1, host: "a", path: "/", header: Header{{"Host", "a"}}},
	{name: "9112-5.1 OWS trimmed, HTAB", in: "GET / HTTP/1.1\r\nHost:a:8080\r\nX-A: \t v a l \t \r\nX-Empty:\r\n\r\n",
		method: "GET", target: "/", minor: 1, host: "a:8080", path: "/",
		header: Header{{"Host", "a:8080"}, {"X-A", "v a l"}, {"X-Empty", ""}}},
	{name: "9110-5.5 obs-text in value", in: "GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\r\n\r\n",
		method: "GET", target: "/", minor: 1, host: "a", path: "/", header: Header{{"Host", "a"}, {"X", "caf\xc3\xa9"}}},
	{name: "9110-5.3 duplicates kept in order, names as received", in: "GET / HTTP/1.1\r\nhost: a\r\nX-Dup: 1\r\nx-dup: 2\r\nX-DUP: 3\r\n\r\n",
		method: "GET", target: "/", minor: 1, host: "a", path: "/",
		header: Header{{"host", "a"}, {"X-Dup", "1"}, {"x-dup", "2"}, {"X-DUP", "3"}}},
	{name: "9112-3.2 HTTP/1.0 without Host", in: "GET / HTTP/1.0\r\n\r\n",
		method: "GET", target: "/", minor: 0, path: "/"},
	{name: "9112-3.2 empty Host", in: "GET / HTTP/1.1\r\nHost:\r\n\r\n",
		method: "GET", target: "/", minor: 1, path: "/", header: Header{{"Host", ""}}},
	{name: "9110-2.5 HTTP/1.2 treated as 1.1", in: "GET / HTTP/1.2\r\nHost: a\r\n\r\n",
		method: "GET", target: "/", minor: 1, host: "a", path: "/", header: Header{{"Host", "a"}}},
	{name: "9112-3.2.2 absolute-form replaces Host", in: "GET HTTP://Example.com:8080?q=1 HTTP/1.1\r\nHost: other\r\n\r\n",
		method: "GET", target: "HTTP://Example.com:8080?q=1", form: AbsoluteForm, minor: 1, host: "Example.com:8080", path: "/?q=1", scheme: "http",
		header: Header{{"Host", "other"}}},
	{name: "9112-3.2.2 absolute-form https IPv6", in: "GET https://[::1]:443/p HTTP/1.1\r\nHost: [::1]:443\r\n\r\n",
		method: "GET", target: "https://[::1]:443/p", form: AbsoluteForm, minor: 1, host: "[::1]:443", path: "/p", scheme: "https",
		header: Header{{"Host", "[::1]:443"}}},
	{name: "9112-3.2.2 absolute-form empty path", in: "GET http://a HTTP/1.1\r\nHost: a\r\n\r\n",
		method: "GET", target: "http://a", form: AbsoluteForm, minor: 1, host: "a", path: "/", scheme: "http",
		header: Header{{"Host", "a"}}},
	{name: "9112-3.2.3 CONNECT authority-form", in: "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
		method: "CONNECT", target: "example.com:443", form: AuthorityForm, minor: 1, host: "example.com:443", path: "example.com:443",
		header: Header{{"Host", "example.com:443"}}},
	{name: "9112-3.2.4 OPTIONS asterisk", in: "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
		method: "OPTIONS", target: "*", form: AsteriskForm, minor: 1, host: "a", path: "*", header: Header{{"Host", "a"}}},
	{name: "9110-9.1 extension method", in: "PROPFIND /x%20y HTTP/1.1\r\nHost: a\r\n\r\n",
		method: "PROPFIND", target: "/x%20y", minor: 1, host: "a", path: "/x%20y", header: Header{{"Host", "a"}}},
	{name: "9112-6.3 Content-Length body", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world",
		method: "POST", target: "/", minor: 1, host: "a", path: "/", header: Header{{"Host", "a"}, {"Content-Length", "11"}},
		body: Framing{LengthBody, 11}, data: "hello world"},
	{name: "9112-6.3 Content-Length zero", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
		method: "POST", target: "/", minor: 1, host: "a", path: "/", header: Header{{"Host", "a"}, {"Content-Length", "0"}},
		body: Framing{LengthBody, 0}},
	{name: "9112-6.3 Content-Length leading zeros", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 005\r\n\r\nhello",
		method: "POST", target: "/", minor: 1, host: "a", path: "/", header: Header{{"Host", "a"}, {"Content-Length", "005"}},
		body: Framing{LengthBody, 5}, data: "hello"},
	{name: "9112-6.3 identical Content-Length fields", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
		method: "POST", target: "/", minor: 1, host: "a", path: "/", header: Header{{"Host", "a"}, {"Content-Length", "5"}, {"Content-Length", "5"}},
		body: Framing{LengthBody, 5}, data: "hello"},
	{name: "9112-7.1 chunked with extensions and trailers", in: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tChunked \r\nTrailer: X-Sum\r\n\r\n" +
		"5;a=b;c=\"d\\\"e\" ; f\r\nhello\r\nA; x = y \t;z\r\n0123456789\r\n0;last\r\nX-Sum: 1\r\nx-sum: 2\r\n\r\n",
		method: "POST", target: "/", minor: 1, host: "a", path: "/",
		header: Header{{"Host", "a"}, {"Transfer-Encoding", "Chunked"}, {"Trailer", "X-Sum"}},
		body:   Framing{Kind: ChunkedBody}, data: "hello0123456789", trailer: Header{{"X-Sum", "1"}, {"x-sum", "2"}}},
	{name: "9112-6.1 Transfer-Encoding:\\tchunked is valid", in: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked\r\n\r\n1\r\nz\r\n0\r\n\r\n",
		method: "POST", target: "/", minor: 1, host: "a", path: "/",
		header: Header{{"Host", "a"}, {"Transfer-Encoding", "chunked"}},
		body:   Framing{Kind: ChunkedBody}, data: "z"},
	{name: "9112-7.1 chunk size with leading zeros", in: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n00003\r\nabc\r\n000\r\n\r\n",
		method: "POST", target: "/", minor: 1, host: "a", path: "/",
		header: Header{{"Host", "a"}, {"Transfer-Encoding", "chunked"}},
		body:   Framing{Kind: ChunkedBody}, data: "abc"},
}

func TestReadRequestGood(t *testing.T) {
	for _, tc := range goodRequests {
		t.Run(tc.name, func(t *testing.T) {
			req, body, tr, err := readAllRequest(tc.in, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if req.Method != tc.method || req.Target != tc.target || req.Form != tc.form || req.Major != 1 || req.Minor != tc.minor ||
				req.Host != tc.host || req.Path != tc.path || req.Scheme != tc.scheme || req.Body != tc.body {
				t.Fatalf("got %+v", *req)
			}
			if !equalHeader(req.Header, tc.header) {
				t.Fatalf("header %q, want %q", req.Header, tc.header)
			}
			if string(body) != tc.data {
				t.Fatalf("body %q, want %q", body, tc.data)
			}
			if !equalHeader(tr, tc.trailer) {
				t.Fatalf("trailers %q, want %q", tr, tc.trailer)
			}
		})
	}
}

func equalHeader(a, b Header) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

var badResponses = []struct {
	badCase
	method string
}{
	{badCase{"9112-4 no SP", "HTTP/1.1\r\n\r\n", ErrBadStatusLine, 502}, "GET"},
	{badCase{"9112-4 two-digit status", "HTTP/1.1 20 OK\r\n\r\n", ErrBadStatusLine, 502}, "GET"},
	{badCase{"9112-4 four-digit status", "HTTP/1.1 2000 OK\r\n\r\n", ErrBadStatusLine, 502}, "GET"},
	{badCase{"9112-4 signed status", "HTTP/1.1 +20 OK\r\n\r\n", ErrBadStatusLine, 502}, "GET"},
	{badCase{"9112-4 double SP", "HTTP/1.1  200 OK\r\n\r\n", ErrBadStatusLine, 502}, "GET"},
	{badCase{"9110-15 status 099", "HTTP/1.1 099 X\r\n\r\n", ErrBadStatus, 502}, "GET"},
	{badCase{"9110-15 status 600", "HTTP/1.1 600 X\r\n\r\n", ErrBadStatus, 502}, "GET"},
	{badCase{"9112-4 CTL in reason", "HTTP/1.1 200 O\x01K\r\n\r\n", ErrBadStatusLine, 502}, "GET"},
	{badCase{"9112-2.3 bad version", "HTTP/1.x 200 OK\r\n\r\n", ErrBadVersion, 502}, "GET"},
	{badCase{"9112-2.3 HTTP/2.0", "HTTP/2.0 200 OK\r\n\r\n", ErrUnsupportedVersion, 505}, "GET"},
	{badCase{"9112-2.3 ICY", "ICY 200 OK\r\n\r\n", ErrBadStatusLine, 502}, "GET"},
	{badCase{"9112-4 empty status-line", "\r\nHTTP/1.1 200 OK\r\n\r\n", ErrBadStatusLine, 502}, "GET"},
	{badCase{"9112-2.2 bare LF", "HTTP/1.1 200 OK\nContent-Length: 0\n\n", ErrBareLF, 400}, "GET"},
	{badCase{"9112-6.1 CL and TE", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", ErrLengthAndChunked, 400}, "GET"},
	{badCase{"9112-6.1 CL and TE in HEAD response", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", ErrLengthAndChunked, 400}, "HEAD"},
	{badCase{"9112-6.1 gzip", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", ErrUnsupportedTransferCoding, 400}, "GET"},
	{badCase{"9112-6.1 TE in HTTP/1.0 response", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", ErrUnsupportedTransferCoding, 400}, "GET"},
	{badCase{"9110-8.6 bad CL in 304", "HTTP/1.1 304 Not Modified\r\nContent-Length: x\r\n\r\n", ErrBadContentLength, 400}, "GET"},
	{badCase{"9112-6.3 CL truncated", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", ErrUnexpectedEOF, 400}, "GET"},
	{badCase{"9110-15.2.2 101 unsupported", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", ErrUnsupportedResponse, 502}, "GET"},
	{badCase{"9110-9.3.6 2xx to CONNECT unsupported", "HTTP/1.1 200 OK\r\n\r\n", ErrUnsupportedResponse, 502}, "CONNECT"},
	{badCase{"9112-4 status-line too long", "HTTP/1.1 200 " + strings.Repeat("a", DefaultMaxLineBytes) + "\r\n\r\n", ErrLineTooLong, 502}, "GET"},
	{badCase{"9112-4 EOF in head", "HTTP/1.1 200 OK\r\n", ErrUnexpectedEOF, 400}, "GET"},
}

func TestReadResponseErrors(t *testing.T) {
	for _, tc := range badResponses {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := readAllResponse(tc.in, tc.method)
			checkErr(t, err, tc.kind, tc.status)
		})
	}
}

var goodResponses = []struct {
	name, in, method string
	status           int
	reason           string
	minor            int
	header           Header
	body             Framing
	data             string
}{
	{"9112-4 200 CL", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", "GET", 200, "OK", 1, Header{{"Content-Length", "2"}}, Framing{LengthBody, 2}, "hi"},
	{"9112-4 reason kept verbatim", "HTTP/1.1 404 Not \tFound \xff\r\nContent-Length: 0\r\n\r\n", "GET", 404, "Not \tFound \xff", 1, Header{{"Content-Length", "0"}}, Framing{LengthBody, 0}, ""},
	{"9112-4 empty reason with SP", "HTTP/1.1 599 \r\nContent-Length: 0\r\n\r\n", "GET", 599, "", 1, Header{{"Content-Length", "0"}}, Framing{LengthBody, 0}, ""},
	{"9112-4 no reason no SP (like net/http)", "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", "GET", 200, "", 1, Header{{"Content-Length", "0"}}, Framing{LengthBody, 0}, ""},
	{"9112-6.3 HEAD response with CL", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", "HEAD", 200, "OK", 1, Header{{"Content-Length", "100"}}, Framing{}, ""},
	{"9112-6.3 HEAD response chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "HEAD", 200, "OK", 1, Header{{"Transfer-Encoding", "chunked"}}, Framing{}, ""},
	{"9112-6.3 204", "HTTP/1.1 204 No Content\r\n\r\n", "GET", 204, "No Content", 1, nil, Framing{}, ""},
	{"9112-6.3 304 with CL", "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", "GET", 304, "Not Modified", 1, Header{{"Content-Length", "5"}}, Framing{}, ""},
	{"9112-6.3 100 Continue", "HTTP/1.1 100 Continue\r\n\r\n", "POST", 100, "Continue", 1, nil, Framing{}, ""},
	{"9112-6.3 close-delimited", "HTTP/1.1 200 OK\r\n\r\nall of it", "GET", 200, "OK", 1, nil, Framing{Kind: UntilCloseBody}, "all of it"},
	{"9112-6.3 HTTP/1.0 close-delimited", "HTTP/1.0 200 OK\r\n\r\nold", "GET", 200, "OK", 0, nil, Framing{Kind: UntilCloseBody}, "old"},
	{"9112-7.1 chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", "GET", 200, "OK", 1, Header{{"Transfer-Encoding", "chunked"}}, Framing{Kind: ChunkedBody}, "abc"},
	{"9110-15 non-2xx to CONNECT", "HTTP/1.1 407 Proxy Auth\r\nContent-Length: 0\r\n\r\n", "CONNECT", 407, "Proxy Auth", 1, Header{{"Content-Length", "0"}}, Framing{LengthBody, 0}, ""},
}

func TestReadResponseGood(t *testing.T) {
	for _, tc := range goodResponses {
		t.Run(tc.name, func(t *testing.T) {
			resp, body, err := readAllResponse(tc.in, tc.method)
			if err != nil {
				t.Fatal(err)
			}
			if resp.Status != tc.status || resp.Reason != tc.reason || resp.Major != 1 || resp.Minor != tc.minor || resp.Body != tc.body {
				t.Fatalf("got %+v", *resp)
			}
			if !equalHeader(resp.Header, tc.header) {
				t.Fatalf("header %q, want %q", resp.Header, tc.header)
			}
			if string(body) != tc.data {
				t.Fatalf("body %q, want %q", body, tc.data)
			}
		})
	}
}

func TestInterimThenFinal(t *testing.T) {
	r := NewReader(strings.NewReader("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), Limits{})
	defer r.Release()
	var resp Response
	for _, want := range []int{100, 103, 200} {
		if err := r.ReadResponse(&resp, "GET"); err != nil {
			t.Fatal(err)
		}
		if resp.Status != want {
			t.Fatalf("status %d, want %d", resp.Status, want)
		}
		if want < 200 && resp.Body.Kind != NoBody {
			t.Fatalf("interim with body %v", resp.Body)
		}
	}
	b, err := readBody(r)
	if err != nil || string(b) != "ok" {
		t.Fatalf("%q %v", b, err)
	}
}

func TestCleanEOF(t *testing.T) {
	for _, in := range []string{"", "\r\n", "\r\n\r\n"} {
		r := NewReader(strings.NewReader(in), Limits{})
		var req Request
		if err := r.ReadRequest(&req); err != io.EOF {
			t.Fatalf("%q: err = %v, want io.EOF", in, err)
		}
		var resp Response
		r.Reset(strings.NewReader(""))
		if err := r.ReadResponse(&resp, "GET"); err != io.EOF {
			t.Fatalf("response: err = %v, want io.EOF", err)
		}
		r.Release()
	}
}

// TestPipelined: a second request follows in the same read; Buffered reports it.
func TestPipelined(t *testing.T) {
	in := "POST /1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /2 HTTP/1.1\r\nHost: a\r\n\r\n"
	r := NewReader(strings.NewReader(in), Limits{})
	defer r.Release()
	var req Request
	if err := r.ReadRequest(&req); err != nil {
		t.Fatal(err)
	}
	if err := r.ReadRequest(&req); !isKind(err, ErrBodyNotConsumed) {
		t.Fatalf("second read before body: %v", err)
	}
	r.Reset(strings.NewReader(in))
	if err := r.ReadRequest(&req); err != nil {
		t.Fatal(err)
	}
	if b, err := readBody(r); err != nil || string(b) != "abc" {
		t.Fatalf("%q %v", b, err)
	}
	if got, want := r.Buffered(), len("GET /2 HTTP/1.1\r\nHost: a\r\n\r\n"); got != want {
		t.Fatalf("Buffered = %d, want %d", got, want)
	}
	if err := r.ReadRequest(&req); err != nil || req.Target != "/2" {
		t.Fatalf("%v %q", err, req.Target)
	}
	if err := r.ReadRequest(&req); err != io.EOF {
		t.Fatalf("err = %v", err)
	}
}

func isKind(err error, k ErrorKind) bool {
	var e *Error
	return errors.As(err, &e) && e.Kind == k
}

// oneByteReader returns one byte per Read: every buffer boundary is hit.
type oneByteReader struct{ s string }

func (o *oneByteReader) Read(p []byte) (int, error) {
	if o.s == "" {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	p[0] = o.s[0]
	o.s = o.s[1:]
	return 1, nil
}

// TestLargeHeadAndByteAtATime: a head larger than the read buffer, fed one
// byte at a time, parses the same as in one piece.
func TestLargeHeadAndByteAtATime(t *testing.T) {
	var sb strings.Builder
	sb.WriteString("POST /" + strings.Repeat("p", 8000) + " HTTP/1.1\r\nHost: a\r\n")
	for i := 0; i < 90; i++ {
		sb.WriteString("X-Long: " + strings.Repeat("v", 600) + "\r\n")
	}
	sb.WriteString("Transfer-Encoding: chunked\r\n\r\n")
	sb.WriteString("4000\r\n" + strings.Repeat("d", 0x4000) + "\r\n1;x=\"y\"\r\nz\r\n0\r\nT: 1\r\n\r\n")
	in := sb.String()
	if len(in) < 2*readBufSize {
		t.Fatal("test head too small")
	}
	for _, src := range []io.Reader{strings.NewReader(in), &oneByteReader{in}} {
		r := NewReader(src, Limits{})
		var req Request
		if err := r.ReadRequest(&req); err != nil {
			t.Fatal(err)
		}
		if len(req.Header) != 92 || len(req.Target) != 8001 {
			t.Fatalf("fields %d target %d", len(req.Header), len(req.Target))
		}
		p := make([]byte, 1<<15)
		var units []int
		var ends []bool
		for {
			n, end, err := r.ReadBody(p)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			units, ends = append(units, n), append(ends, end)
		}
		if len(units) != 2 || units[0] != 0x4000 || units[1] != 1 || !ends[0] || !ends[1] {
			t.Fatalf("units %v ends %v", units, ends)
		}
		if tr := r.Trailers(); len(tr) != 1 || tr[0] != (Field{"T", "1"}) {
			t.Fatalf("trailers %v", tr)
		}
		r.Release()
	}
}

// TestChunkUnits: a chunk larger than p comes in several calls, chunkEnd on the last.
func TestChunkUnits(t *testing.T) {
	in := "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n3\r\nabc\r\n0\r\n\r\n"
	r := NewReader(&oneByteReader{in}, Limits{})
	defer r.Release()
	var resp Response
	if err := r.ReadResponse(&resp, "GET"); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 4)
	var got []string
	for {
		n, end, err := r.ReadBody(p)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		s := string(p[:n])
		if end {
			s += "|"
		}
		got = append(got, s)
	}
	want := []string{"0123", "4567", "89|", "abc|"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("units %q, want %q", got, want)
	}
	if n, _, err := r.ReadBody(p); n != 0 || err != io.EOF {
		t.Fatalf("after EOF: %d %v", n, err)
	}
}

// TestLimitsConfigurable: each limit applies with its own status.
func TestLimitsConfigurable(t *testing.T) {
	lim := Limits{MaxLineBytes: 20, MaxHeaderBytes: 40, MaxHeaderCount: 3}
	cases := []badCase{
		{"line", "GET /" + strings.Repeat("a", 20) + " HTTP/1.1\r\nHost: a\r\n\r\n", ErrLineTooLong, 414},
		{"bytes", "GET / HTTP/1.1\r\nHost: a\r\nX: " + strings.Repeat("b", 40) + "\r\n\r\n", ErrHeaderTooLarge, 431},
		{"count", "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", ErrTooManyFields, 431},
	}
	for _, tc := range cases {
		_, _, _, err := readAllRequest(tc.in, lim)
		checkErr(t, err, tc.kind, tc.status)
	}
	// Exactly at the limits is fine: line 20 bytes, fields 40 bytes, 3 fields.
	in := "GET /" + strings.Repeat("a", 6) + " HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: " + strings.Repeat("b", 15) + "\r\n\r\n"
	if _, _, _, err := readAllRequest(in, lim); err != nil {
		t.Fatal(err)
	}
}

func TestDecideFraming(t *testing.T) {
	cases := []struct {
		h      Header
		resp   bool
		minor  int
		method string
		status int
		want   Framing
		kind   ErrorKind
	}{
		{Header{{"content-length", "7"}}, false, 1, "POST", 0, Framing{LengthBody, 7}, 0},
		{nil, false, 1, "POST", 0, Framing{}, 0},
		{nil, true, 1, "GET", 200, Framing{Kind: UntilCloseBody}, 0},
		{nil, true, 1, "GET", 204, Framing{}, 0},
		{Header{{"Transfer-Encoding", "CHUNKED"}}, true, 1, "GET", 200, Framing{Kind: ChunkedBody}, 0},
		{Header{{"Transfer-Encoding", "chunked"}}, true, 1, "GET", 304, Framing{}, 0},
		{Header{{"Content-Length", "9223372036854775807"}}, false, 1, "PUT", 0, Framing{LengthBody, 1<<63 - 1}, 0},
		{Header{{"Content-Length", "9223372036854775808"}}, false, 1, "PUT", 0, Framing{}, ErrBadContentLength},
		{Header{{"Transfer-Encoding", "chunked"}, {"Content-Length", "0"}}, true, 1, "HEAD", 200, Framing{}, ErrLengthAndChunked},
	}
	for i, tc := range cases {
		f, err := decideFraming(tc.h, tc.resp, tc.minor, tc.method, tc.status)
		if tc.kind != 0 {
			if err == nil || err.Kind != tc.kind {
				t.Errorf("%d: err %v, want %v", i, err, tc.kind)
			}
			continue
		}
		if err != nil || f != tc.want {
			t.Errorf("%d: %v %v, want %v", i, f, err, tc.want)
		}
	}
}

func TestHeaderHelpers(t *testing.T) {
	h := Header{{"A", "1"}, {"b", "2"}, {"a", "3"}, {"C", "4"}}
	if h.Get("a") != "1" || h.Get("B") != "2" || h.Get("x") != "" || !h.Has("c") || h.Has("d") {
		t.Fatal("Get/Has")
	}
	var vals []string
	for v := range h.Values("A") {
		vals = append(vals, v)
	}
	if strings.Join(vals, ",") != "1,3" {
		t.Fatal(vals)
	}
	c := h.Clone()
	h = h.Del("a")
	if !equalHeader(h, Header{{"b", "2"}, {"C", "4"}}) || len(c) != 4 || c[0].Value != "1" {
		t.Fatalf("Del %v clone %v", h, c)
	}
	h = h.Add("D", "5")
	if h[2] != (Field{"D", "5"}) {
		t.Fatal("Add")
	}
	for in, want := range map[string]string{"content-type": "Content-Type", "Content-Type": "Content-Type", "x-FOO-bar": "X-Foo-Bar", "www-authenticate": "Www-Authenticate", "a b": "a b", "": "", "-x": "-X"} {
		if got := CanonicalName(in); got != want {
			t.Errorf("CanonicalName(%q) = %q, want %q", in, got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = CanonicalName("X-Already-Canonical") }); n != 0 {
		t.Errorf("CanonicalName allocates %v on canonical input", n)
	}
	if !HasToken("keep-alive, Close", "close") || !HasToken(" , upgrade ,", "Upgrade") || HasToken("closed", "close") || HasToken("", "close") {
		t.Error("HasToken")
	}
	var toks []string
	for tk := range Tokens(" a ,, b\t,c ,") {
		toks = append(toks, tk)
	}
	if strings.Join(toks, "|") != "a|b|c" {
		t.Errorf("Tokens %q", toks)
	}
	if !ValidFieldName("X-Ok_1!#$%&'*+.^`|~") || ValidFieldName("") || ValidFieldName("a b") || ValidFieldName("a:b") || ValidFieldName("é") {
		t.Error("ValidFieldName")
	}
	if !ValidFieldValue("a\tb c\xff") || ValidFieldValue("a\rb") || ValidFieldValue("a\nb") || ValidFieldValue("a\x00") || ValidFieldValue("\x7f") {
		t.Error("ValidFieldValue")
	}
}

func TestErrorKindString(t *testing.T) {
	for k := ErrLineTooLong; k <= ErrTooManyEmptyLines; k++ {
		if s := k.String(); s == "" || strings.HasPrefix(s, "ErrorKind(") {
			t.Errorf("kind %d has no name", k)
		}
	}
	e := &Error{Kind: ErrBadTarget, Status: 400, Detail: "x"}
	if e.Error() != "httpio: bad request-target: x" {
		t.Error(e.Error())
	}
	if !bytes.Contains([]byte(bad(ErrBadTarget, "%q", excerpt(strings.Repeat("a", 1000))).Error()), []byte("...")) {
		t.Error("excerpt not bounded")
	}
}

// pieceReader returns one scripted piece per Read (the rest of a piece
// that does not fit in p on the next Read), then io.EOF: each piece is
// what one read of a socket would return.
type pieceReader struct{ pieces []string }

func (s *pieceReader) Read(p []byte) (int, error) {
	if len(s.pieces) == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.pieces[0])
	if s.pieces[0] = s.pieces[0][n:]; s.pieces[0] == "" {
		s.pieces = s.pieces[1:]
	}
	return n, nil
}

// TestParkBetweenMessages: Park gives the buffer back only when nothing is
// buffered, and the Reader carries on with a new one from the next read:
// a head after a park, pipelined requests (kept through Park), a
// Content-Length and a chunked body parked in the middle, and a buffer that
// grew for a large head (dropped).
func TestParkBetweenMessages(t *testing.T) {
	big := "GET /big HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("b", 2*readBufSize) + "\r\n\r\n"
	src := &pieceReader{pieces: []string{
		"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /2 HTTP/1.1\r\nHo", "st: a\r\n\r\nGET /3 HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /4 HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n01234", "56789",
		"POST /5 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", "cde\r\n0\r\nT: 1\r\n\r\n",
		big,
		"GET /7 HTTP/1.1\r\nHost: a\r\n\r\n",
	}}
	r := NewReader(src, Limits{MaxHeaderBytes: 4 * readBufSize})
	defer r.Release()
	if r.buf != nil {
		t.Fatal("a new Reader holds a buffer before its first read")
	}
	var req Request
	read := func(target string) {
		t.Helper()
		if err := r.ReadRequest(&req); err != nil || req.Target != target {
			t.Fatalf("want %s: got %q, %v", target, req.Target, err)
		}
	}
	parked := func(want bool) {
		t.Helper()
		r.Park()
		if got := r.buf == nil; got != want {
			t.Fatalf("parked = %v with %d bytes buffered, want %v", got, r.Buffered(), want)
		}
	}
	read("/1")
	parked(true)
	read("/2")
	parked(false) // /3 is buffered, pipelined
	read("/3")
	parked(true)
	read("/4")
	var p [3]byte
	if n, _, err := r.ReadBody(p[:]); err != nil || string(p[:n]) != "012" {
		t.Fatalf("%q %v", p[:n], err)
	}
	parked(false) // "34" is buffered
	if n, _, err := r.ReadBody(p[:2]); err != nil || string(p[:n]) != "34" {
		t.Fatalf("%q %v", p[:n], err)
	}
	parked(true) // mid-body, nothing buffered
	if b, err := readBody(r); err != nil || string(b) != "56789" {
		t.Fatalf("%q %v", b, err)
	}
	read("/5")
	if n, _, err := r.ReadBody(p[:2]); err != nil || string(p[:n]) != "ab" {
		t.Fatalf("%q %v", p[:n], err)
	}
	parked(true) // mid-chunk, nothing buffered
	if b, err := readBody(r); err != nil || string(b) != "cde" || r.Trailers().Get("T") != "1" {
		t.Fatalf("%q %v %v", b, err, r.Trailers())
	}
	read("/big")
	if cap(r.buf) <= readBufSize || r.bp != nil {
		t.Fatalf("buffer of %d bytes for a large head (pooled: %v)", cap(r.buf), r.bp != nil)
	}
	parked(true)
	read("/7")
	if cap(r.buf) != readBufSize || r.bp == nil {
		t.Fatalf("buffer of %d bytes after a park (pooled: %v)", cap(r.buf), r.bp != nil)
	}
	parked(true)
	if err := r.ReadRequest(&req); err != io.EOF {
		t.Fatalf("err = %v, want io.EOF", err)
	}
}
