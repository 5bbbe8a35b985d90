package httpio

// Protocol switches (RFC 9110 7.8): ptproxy carries a WebSocket upgrade
// across its HTTP/3 hop as an extended CONNECT (RFC 9220), so each end
// needs the HTTP/1.1 side of a switch: the 101 answer, and the bytes that
// follow it, which are no longer HTTP.

// UpgradeProtocol returns the protocol a request asks to switch to, or ""
// for none: an HTTP/1.1 GET without a body whose Connection lists
// "upgrade" and whose Upgrade field names want (compared without case).
// Only want is recognised; an Upgrade to anything else is an ordinary
// request whose hop-by-hop Upgrade is dropped.
func UpgradeProtocol(req *Request, want string) string {
	if req.Method != "GET" || req.Major != 1 || req.Minor != 1 || req.Body.Kind != NoBody {
		return ""
	}
	connUpgrade := false
	for v := range req.Header.Values("Connection") {
		if HasToken(v, "upgrade") {
			connUpgrade = true
		}
	}
	if !connUpgrade || !upgradesTo(req.Header, want) {
		return ""
	}
	return want
}

// upgradesTo reports whether an Upgrade field of h lists protocol (a
// protocol name, without a version suffix; a versioned "websocket/13" is
// not the same protocol name by RFC 9110 7.8, and WebSocket uses none).
func upgradesTo(h Header, protocol string) bool {
	for v := range h.Values("Upgrade") {
		if HasToken(v, protocol) {
			return true
		}
	}
	return false
}

// ReadUpgradeResponse reads the response to a request that asked to switch
// to protocol: a 101 whose Upgrade field names protocol is returned with
// NoBody, after which the connection carries that protocol (read it with
// ReadRaw); a 101 to anything else is an *Error ErrUnsupportedResponse;
// any other response is read as the answer to a GET.
func (r *Reader) ReadUpgradeResponse(resp *Response, protocol string) error {
	return r.readResponse(resp, "GET", protocol)
}

// ReadRaw reads the bytes that follow the last message once the
// connection switched protocols: first what the Reader has buffered past
// that message, then the source, like io.Reader.Read.
func (r *Reader) ReadRaw(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return r.readSome(p)
}
