package httpio

import (
	"net/netip"
	"strings"
)

// parseTarget classifies req.Target (RFC 9112 3.2) and fills Form, Path,
// Scheme and, for absolute and authority form, Host.
func parseTarget(req *Request) *Error {
	t := req.Target
	if err := checkTargetBytes(t); err != nil {
		return err
	}
	req.Scheme, req.Host = "", ""
	switch {
	case req.Method == "CONNECT":
		// RFC 9112 3.2.3: authority-form = uri-host ":" port, CONNECT only,
		// and CONNECT only with it.
		if !ValidAuthority(t, true) {
			return bad(ErrBadTarget, "CONNECT target %q is not host:port", excerpt(t))
		}
		req.Form, req.Host, req.Path = AuthorityForm, t, t
	case t[0] == '/':
		// RFC 9112 3.2.1: origin-form = absolute-path [ "?" query ].
		req.Form, req.Path = OriginForm, t
	case t == "*":
		// RFC 9112 3.2.4: asterisk-form, OPTIONS only.
		if req.Method != "OPTIONS" {
			return bad(ErrBadTarget, "asterisk-form with method %q", excerpt(req.Method))
		}
		req.Form, req.Path = AsteriskForm, t
	default:
		return parseAbsolute(req)
	}
	return nil
}

// parseAbsolute handles absolute-form (RFC 9112 3.2.2), which a server MUST
// accept. Only http and https URIs (RFC 9110 4.2) with a non-empty host and
// no userinfo (RFC 9110 4.2.4: deprecated, and a classic way to confuse
// which host is meant) are accepted.
func parseAbsolute(req *Request) *Error {
	t := req.Target
	i := strings.Index(t, "://")
	if i < 0 {
		return bad(ErrBadTarget, "request-target %q is in no known form", excerpt(t))
	}
	switch scheme := t[:i]; {
	case EqualFold(scheme, "http"):
		req.Scheme = "http"
	case EqualFold(scheme, "https"):
		req.Scheme = "https"
	default:
		return bad(ErrBadTarget, "scheme %q is not http or https", excerpt(scheme))
	}
	rest := t[i+3:]
	end := strings.IndexAny(rest, "/?")
	if end < 0 {
		end = len(rest)
	}
	auth := rest[:end]
	if strings.IndexByte(auth, '@') >= 0 {
		return bad(ErrBadTarget, "userinfo in request-target %q", excerpt(t))
	}
	if !ValidAuthority(auth, false) {
		return bad(ErrBadTarget, "authority %q in request-target", excerpt(auth))
	}
	req.Form, req.Host = AbsoluteForm, auth
	switch p := rest[end:]; {
	case p == "":
		req.Path = "/"
	case p[0] == '?':
		req.Path = "/" + p
	default:
		req.Path = p
	}
	return nil
}

// checkTargetBytes enforces what every form shares: no whitespace, no CTL,
// no raw non-ASCII byte (RFC 3986 2: a URI is ASCII), no fragment
// (RFC 9112 3.2: the target has none, clients strip it), and
// well-formed percent-encoding (RFC 3986 2.1; net/http rejects bad escapes
// in the path too).
func checkTargetBytes(t string) *Error {
	for i := 0; i < len(t); i++ {
		c := t[i]
		switch {
		case c <= ' ' || c >= 0x7f:
			return bad(ErrBadTarget, "byte %q in request-target %q", t[i:i+1], excerpt(t))
		case c == '#':
			return bad(ErrBadTarget, "fragment in request-target %q", excerpt(t))
		case c == '%':
			if i+2 >= len(t) || !isHex(t[i+1]) || !isHex(t[i+2]) {
				return bad(ErrBadTarget, "bad percent-encoding in request-target %q", excerpt(t))
			}
		}
	}
	return nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// checkHost applies RFC 9112 3.2: an HTTP/1.1 request has exactly one Host
// field; any request has at most one, and its value must be a valid
// authority. With an absolute- or authority-form target, req.Host already
// holds the target's authority, which wins over the field (RFC 9112 3.2.2);
// else req.Host is the field value. The field stays in req.Header as
// received.
func checkHost(req *Request) *Error {
	n := 0
	var host string
	for i := range req.Header {
		if EqualFold(req.Header[i].Name, "Host") {
			n++
			host = req.Header[i].Value
		}
	}
	switch {
	case n > 1:
		return bad(ErrDuplicateHost, "%d Host fields", n)
	case n == 0 && req.Minor >= 1:
		return bad(ErrMissingHost, "HTTP/1.1 request without Host")
	case n == 0:
		return nil
	}
	// RFC 9112 3.2: an empty Host is what a client sends when the target
	// URI has no authority, so it is valid.
	if host != "" && !ValidAuthority(host, false) {
		return bad(ErrBadHost, "Host %q is not a valid authority", excerpt(host))
	}
	if req.Form == OriginForm || req.Form == AsteriskForm {
		req.Host = host
	}
	return nil
}

// ValidAuthority reports whether s is uri-host [ ":" port ]
// (RFC 9110 7.2, RFC 3986 3.2.2-3.2.3), stricter than RFC 3986 in ways no
// real client notices: the host is non-empty; a reg-name (or IPv4 address)
// uses only unreserved and sub-delims characters (no percent-encoding); an
// IP literal is a bracketed IPv6 address without zone; the port, when
// present, is 1 to 5 digits. needPort demands the port (authority-form).
// Every string accepted here is also accepted by net/http's
// httpguts.ValidHostHeader and url.Parse.
func ValidAuthority(s string, needPort bool) bool {
	host, port := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return false
		}
		host, port = s[:end+1], s[end+1:]
		if port != "" && port[0] != ':' {
			return false
		}
		a, err := netip.ParseAddr(host[1 : len(host)-1])
		if err != nil || !a.Is6() || a.Zone() != "" {
			return false
		}
	} else {
		if i := strings.IndexByte(s, ':'); i >= 0 {
			host, port = s[:i], s[i:]
		}
		if host == "" {
			return false
		}
		for i := 0; i < len(host); i++ {
			if !regNameTable[host[i]] {
				return false
			}
		}
	}
	if port == "" {
		return !needPort
	}
	port = port[1:]
	if len(port) == 0 || len(port) > 5 {
		return false
	}
	for i := 0; i < len(port); i++ {
		if !isDigit(port[i]) {
			return false
		}
	}
	return true
}

// regNameTable: unreserved / sub-delims (RFC 3986 3.2.2), without "%".
var regNameTable = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "-._~!$&'()*+,;=" {
		t[c] = true
	}
	return t
}()
