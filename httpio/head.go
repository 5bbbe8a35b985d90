package httpio

import "strings"

// Parsing of a complete head held in one string s. scanHead has already
// checked line endings, bare CRs and the limits, so every line here ends in
// CRLF and the head ends with an empty line. All strings stored in the
// Request or Response are substrings of s or interned constants.

// nextLine splits s at the first CRLF.
func nextLine(s string) (line, rest string) {
	i := strings.IndexByte(s, '\n') // always present and preceded by CR
	return s[:i-1], s[i+1:]
}

// parseRequest parses a request head (RFC 9112 3) into req.
func parseRequest(s string, req *Request) *Error {
	line, rest := nextLine(s)
	if err := parseRequestLine(line, req); err != nil {
		return err
	}
	h, err := parseFields(rest, req.Header[:0], false)
	req.Header = h
	if err != nil {
		return err
	}
	if err := checkHost(req); err != nil {
		return err
	}
	f, err := decideFraming(req.Header, false, req.Minor, req.Method, 0)
	if err != nil {
		return err
	}
	req.Body = f
	return nil
}

// parseRequestLine: request-line = method SP request-target SP HTTP-version
// (RFC 9112 3), with exactly one SP between the parts: RFC 9112 3 allows a
// lenient split on other whitespace, which is exactly what a smuggler
// exploits, so ptproxy does not.
func parseRequestLine(line string, req *Request) *Error {
	sp1 := strings.IndexByte(line, ' ')
	if sp1 < 0 {
		return bad(ErrBadRequestLine, "no SP in request-line %q", excerpt(line))
	}
	method := line[:sp1]
	if method == "" {
		return bad(ErrBadRequestLine, "request-line %q starts with SP", excerpt(line))
	}
	if !ValidFieldName(method) { // method = token (RFC 9110 9.1)
		return bad(ErrBadMethod, "method %q is not a token", excerpt(method))
	}
	rest := line[sp1+1:]
	sp2 := strings.IndexByte(rest, ' ')
	if sp2 < 0 {
		// An HTTP/0.9 simple request ("GET /") or garbage. RFC 9112 2.3
		// lets us answer 505 too; the request is malformed for HTTP/1.x,
		// so 400.
		return bad(ErrBadRequestLine, "no HTTP-version in request-line %q (HTTP/0.9 is not supported)", excerpt(line))
	}
	target, version := rest[:sp2], rest[sp2+1:]
	if target == "" {
		return bad(ErrBadRequestLine, "empty request-target or double SP in %q", excerpt(line))
	}
	if strings.IndexByte(version, ' ') >= 0 {
		return bad(ErrBadRequestLine, "extra SP in request-line %q", excerpt(line))
	}
	major, minor, err := parseVersion(version, 400)
	if err != nil {
		return err
	}
	if m := internMethod(method); m != "" {
		method = m
	}
	req.Method, req.Target, req.Major, req.Minor = method, target, major, minor
	return parseTarget(req)
}

// parseVersion: HTTP-version = "HTTP" "/" DIGIT "." DIGIT (RFC 9112 2.3).
// A major version other than 1 is 505 (RFC 9110 15.6.6). Minor versions
// above 1 are processed as HTTP/1.1 (RFC 9110 2.5: a recipient handles a
// higher minor version as the highest it supports) and reported as 1.
// badStatus is the Status for a syntax error (400 for requests, 502 for
// responses).
func parseVersion(v string, badStatus int) (major, minor int, err *Error) {
	if len(v) != 8 || v[:5] != "HTTP/" || !isDigit(v[5]) || v[6] != '.' || !isDigit(v[7]) {
		return 0, 0, newErr(ErrBadVersion, badStatus, "HTTP-version %q", excerpt(v))
	}
	if v[5] != '1' {
		return 0, 0, newErr(ErrUnsupportedVersion, 505, "HTTP-version %q: only HTTP/1.x is supported", v)
	}
	minor = int(v[7] - '0')
	if minor > 1 {
		minor = 1
	}
	return 1, minor, nil
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// parseFields parses field lines (RFC 9112 5, RFC 9110 5) up to the empty
// line, appending to h. trailer selects the trailer-section rules
// (RFC 9112 7.1.2), see forbiddenTrailer.
func parseFields(s string, h Header, trailer bool) (Header, *Error) {
	for {
		line, rest := nextLine(s)
		s = rest
		if line == "" {
			return h, nil
		}
		// RFC 9112 5.2: obs-fold is rejected (400) rather than unfolded;
		// RFC 9112 2.2: whitespace before the first field line likewise.
		if line[0] == ' ' || line[0] == '\t' {
			return h, bad(ErrObsFold, "line %q starts with whitespace (obs-fold)", excerpt(line))
		}
		colon := strings.IndexByte(line, ':')
		if colon < 0 {
			return h, bad(ErrBadFieldName, "field line %q has no colon", excerpt(line))
		}
		name := line[:colon]
		if name == "" {
			return h, bad(ErrBadFieldName, "empty field name in %q", excerpt(line))
		}
		// RFC 9112 5.1: no whitespace between field name and colon, 400.
		if c := name[len(name)-1]; c == ' ' || c == '\t' {
			return h, bad(ErrBadFieldName, "whitespace before colon in %q", excerpt(line))
		}
		if !ValidFieldName(name) {
			return h, bad(ErrBadFieldName, "field name %q is not a token", excerpt(name))
		}
		value := trimOWS(line[colon+1:])
		for i := 0; i < len(value); i++ {
			if !isValueChar(value[i]) {
				return h, bad(ErrBadFieldValue, "control byte %q in the value of %q", value[i:i+1], excerpt(name))
			}
		}
		if trailer && forbiddenTrailer(name) {
			return h, bad(ErrTrailer, "field %q is not allowed in a trailer section", excerpt(name))
		}
		if n := internName(name); n != "" {
			name = n
		}
		h = append(h, Field{Name: name, Value: value})
	}
}

// forbiddenTrailer reports fields that frame, route or control the
// connection and so must not appear in a trailer section (RFC 9110 6.5.1).
// ptproxy rejects them (ErrTrailer) instead of silently dropping them: a
// peer sending them is confused or malicious.
func forbiddenTrailer(name string) bool {
	switch len(name) {
	case 2:
		return EqualFold(name, "TE")
	case 4:
		return EqualFold(name, "Host")
	case 7:
		return EqualFold(name, "Trailer") || EqualFold(name, "Upgrade")
	case 10:
		return EqualFold(name, "Connection") || EqualFold(name, "Keep-Alive")
	case 14:
		return EqualFold(name, "Content-Length")
	case 16:
		return EqualFold(name, "Proxy-Connection")
	case 17:
		return EqualFold(name, "Transfer-Encoding")
	}
	return false
}

// parseResponse parses a response head (RFC 9112 4) into resp.
func parseResponse(s string, resp *Response, reqMethod, upgrade string) *Error {
	line, rest := nextLine(s)
	if err := parseStatusLine(line, resp); err != nil {
		return err
	}
	h, err := parseFields(rest, resp.Header[:0], false)
	resp.Header = h
	if err != nil {
		return err
	}
	switch {
	case resp.Status == 101 && upgrade != "":
		// RFC 9110 7.8: the Upgrade field names the protocol switched to,
		// which must be the one asked for.
		if !upgradesTo(resp.Header, upgrade) {
			return newErr(ErrUnsupportedResponse, 502, "101 Switching Protocols to another protocol than %s", upgrade)
		}
		resp.Body = Framing{Kind: NoBody}
		return nil
	case resp.Status == 101:
		return newErr(ErrUnsupportedResponse, 502, "101 Switching Protocols: protocol upgrades are not supported")
	case reqMethod == "CONNECT" && resp.Status/100 == 2:
		return newErr(ErrUnsupportedResponse, 502, "%d response to CONNECT: tunnels are not supported", resp.Status)
	}
	f, err := decideFraming(resp.Header, true, resp.Minor, reqMethod, resp.Status)
	if err != nil {
		return err
	}
	resp.Body = f
	return nil
}

// parseStatusLine: status-line = HTTP-version SP status-code SP
// [ reason-phrase ] (RFC 9112 4). Like net/http, a status-line without the
// second SP ("HTTP/1.1 200") is accepted with an empty reason; anything
// net/http rejects is rejected too, and more: exactly one SP, three DIGITs,
// a code in 100..599 (RFC 9110 15), no CTL but HTAB in the reason.
func parseStatusLine(line string, resp *Response) *Error {
	if len(line) < 12 || line[8] != ' ' {
		return newErr(ErrBadStatusLine, 502, "status-line %q", excerpt(line))
	}
	major, minor, err := parseVersion(line[:8], 502)
	if err != nil {
		return err
	}
	c := line[9:12]
	if !isDigit(c[0]) || !isDigit(c[1]) || !isDigit(c[2]) {
		return newErr(ErrBadStatusLine, 502, "status-code %q is not 3 digits", c)
	}
	status := int(c[0]-'0')*100 + int(c[1]-'0')*10 + int(c[2]-'0')
	if status < 100 || status > 599 {
		return newErr(ErrBadStatus, 502, "status-code %d outside 100..599", status)
	}
	reason := ""
	if len(line) > 12 {
		if line[12] != ' ' {
			return newErr(ErrBadStatusLine, 502, "no SP after status-code in %q", excerpt(line))
		}
		reason = line[13:]
		// reason-phrase = 1*( HTAB / SP / VCHAR / obs-text )
		for i := 0; i < len(reason); i++ {
			if !isValueChar(reason[i]) {
				return newErr(ErrBadStatusLine, 502, "control byte %q in reason-phrase", reason[i:i+1])
			}
		}
	}
	resp.Major, resp.Minor, resp.Status, resp.Reason = major, minor, status, reason
	return nil
}
