package h3

import (
	"strings"

	"github.com/ptproxy/ptproxy/httpio"
)

// lowerTokenTable marks the bytes an HTTP/3 field name may hold: tchar
// (RFC 9110 section 5.6.2) without upper-case letters, which RFC 9114
// section 4.2 makes a malformed message.
var lowerTokenTable = func() (t [256]bool) {
	for c := 0; c < 256; c++ {
		if httpio.ValidFieldName(string(rune(c))) && !('A' <= c && c <= 'Z') {
			t[c] = true
		}
	}
	return t
}()

// lowerNames are the names whose lower-case spelling the writer can return
// without allocating: everything in the QPACK static table (RFC 9204
// Appendix A) and what httpio's reader interns, i.e. what ptproxy forwards
// most. An HTTP/1.1 peer spells them "Content-Type", so without this every
// forwarded field would allocate its lower-case name.
var lowerNames = [...]string{
	"accept", "accept-charset", "accept-encoding", "accept-language", "accept-ranges",
	"access-control-allow-credentials", "access-control-allow-headers",
	"access-control-allow-methods", "access-control-allow-origin",
	"access-control-expose-headers", "access-control-request-headers",
	"access-control-request-method", "age", "allow", "alt-svc", "authorization",
	"cache-control", "content-disposition", "content-encoding", "content-language",
	"content-length", "content-location", "content-range", "content-security-policy",
	"content-type", "cookie", "date", "dnt", "early-data", "etag", "expect", "expect-ct",
	"expires", "forwarded", "from", "host", "if-match", "if-modified-since",
	"if-none-match", "if-range", "if-unmodified-since", "last-modified", "link",
	"location", "origin", "pragma", "priority", "proxy-authenticate",
	"proxy-authorization", "purpose", "range", "referer", "retry-after",
	"sec-fetch-dest", "sec-fetch-mode", "sec-fetch-site", "server", "set-cookie",
	"strict-transport-security", "te", "timing-allow-origin", "trailer",
	"upgrade-insecure-requests", "user-agent", "vary", "via", "www-authenticate",
	"x-content-type-options", "x-forwarded-for", "x-forwarded-host",
	"x-forwarded-proto", "x-frame-options", "x-request-id", "x-xss-protection",
}

var lowerByLen = func() (t [40][]string) {
	for _, s := range lowerNames {
		t[len(s)] = append(t[len(s)], s)
	}
	return t
}()

// lowerName checks that name is a token and returns it in lower case, as
// RFC 9114 section 4.2 puts field names on the wire. It allocates only for
// a mixed-case name that is not in lowerNames.
func lowerName(name string) (string, bool) {
	if name == "" {
		return "", false
	}
	upper := false
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !lowerTokenTable[c] {
			if 'A' <= c && c <= 'Z' {
				upper = true
				continue
			}
			return "", false
		}
	}
	if !upper {
		return name, true
	}
	if len(name) < len(lowerByLen) {
		for _, s := range lowerByLen[len(name)] {
			if httpio.EqualFold(s, name) {
				return s, true
			}
		}
	}
	return strings.ToLower(name), true
}

// validName: a lower-case token (RFC 9114 section 4.2).
func validName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		if !lowerTokenTable[name[i]] {
			return false
		}
	}
	return true
}

// checkRegular applies the rules every regular field of a section obeys,
// in a header or trailer section alike, to a lower-case name. It returns a
// reason when the field makes the message malformed.
func checkRegular(name, value string, trailer bool) string {
	if !httpio.ValidFieldValue(value) {
		return "invalid value for field " + name
	}
	switch name {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		// RFC 9114 section 4.2: HTTP/3 has no connection-specific fields;
		// letting them through would let a peer steer the HTTP/1.1 hop.
		return "connection-specific field " + name
	case "te":
		// RFC 9114 section 4.2: TE may only say "trailers".
		if trailer || !httpio.EqualFold(strings.Trim(value, " \t"), "trailers") {
			return "te field other than trailers"
		}
	case "host", "trailer", "content-length":
		// RFC 9110 section 6.5.1: fields that frame or route a message
		// have no business in trailers; httpio rejects them in HTTP/1.1
		// trailers too, so accepting them here would only defer the error
		// to the other side of the tunnel.
		if trailer {
			return "field " + name + " in trailers"
		}
	}
	return ""
}

// parseContentLength parses a content-length value: 1*DIGIT (RFC 9110
// section 8.6), at most 18 digits so it cannot overflow an int64.
func parseContentLength(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// validToken: a non-empty tchar string (method, :protocol).
func validToken(s string) bool { return httpio.ValidFieldName(s) }

// validScheme: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) (RFC 3986
// section 3.1).
func validScheme(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case i > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return false
		}
	}
	return true
}

func isHTTPScheme(s string) bool {
	return httpio.EqualFold(s, "https") || httpio.EqualFold(s, "http")
}

// validPath applies to :path what httpio applies to an HTTP/1.1
// request-target, because the server side turns :path into one: no
// whitespace, CTL or raw non-ASCII (RFC 3986 section 2), no fragment, and
// well-formed percent-encoding.
func validPath(p string) bool {
	if p == "" {
		return false
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c <= ' ' || c >= 0x7f, c == '#':
			return false
		case c == '%':
			if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
				return false
			}
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// validAuthority is httpio's Host rule (ValidAuthority): the same
// strictness on both hops, so userinfo (RFC 9114 4.3.1 forbids it for
// http and https) and anything that could redirect the HTTP/1.1 Host is
// refused. needPort is for CONNECT.
func validAuthority(s string, needPort bool) bool { return httpio.ValidAuthority(s, needPort) }

// statusDigits holds "100101102...599" so that statusText can hand out the
// three digits of any status as a substring instead of formatting one.
var statusDigits = func() string {
	var b strings.Builder
	for s := 100; s <= 599; s++ {
		b.WriteByte(byte('0' + s/100))
		b.WriteByte(byte('0' + s/10%10))
		b.WriteByte(byte('0' + s%10))
	}
	return b.String()
}()

// statusText returns the digits of status, which must be in 100..599.
func statusText(status int) string {
	i := (status - 100) * 3
	return statusDigits[i : i+3]
}

// parseStatus parses :status: exactly three digits, 100 to 599 (RFC 9110
// section 15).
func parseStatus(s string) (int, bool) {
	if len(s) != 3 {
		return 0, false
	}
	n := 0
	for i := 0; i < 3; i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, n >= 100 && n <= 599
}
