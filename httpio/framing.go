package httpio

import "math"

// decideFraming is the one place that decides how the body after a head is
// delimited (RFC 9112 section 6.3). It is a pure function of the head so the
// decision can be tested exhaustively and cannot drift between requests and
// responses. It plays the role of net/http's fixLength plus
// parseTransferEncoding and is never more lenient than they are.
//
// isResponse selects response rules; status and reqMethod matter only for
// responses. Syntax of Transfer-Encoding and Content-Length is validated
// even when the message cannot have a body (HEAD, 1xx, 204, 304), because a
// peer that sends a malformed framing field is not to be trusted with the
// rest of the connection.
func decideFraming(h Header, isResponse bool, minor int, reqMethod string, status int) (Framing, *Error) {
	var (
		teCount, clCount int
		te, cl           string
	)
	for i := range h {
		switch n := h[i].Name; len(n) {
		case len("Content-Length"):
			if EqualFold(n, "Content-Length") {
				clCount++
				// RFC 9110 8.6 and RFC 9112 6.3 item 5: several fields
				// are accepted only when they are byte-identical, as
				// net/http does; a comma list in one field is rejected
				// below (net/http rejects it too).
				if clCount > 1 && h[i].Value != cl {
					return Framing{}, bad(ErrBadContentLength, "conflicting Content-Length values %q and %q", excerpt(cl), excerpt(h[i].Value))
				}
				cl = h[i].Value
			}
		case len("Transfer-Encoding"):
			if EqualFold(n, "Transfer-Encoding") {
				teCount++
				te = h[i].Value
			}
		}
	}

	chunked := false
	if teCount > 0 {
		// RFC 9112 6.1: an HTTP/1.0 recipient must treat a message with
		// Transfer-Encoding as having faulty framing. net/http ignores the
		// field instead; rejecting is the stricter choice.
		if minor == 0 {
			return Framing{}, bad(ErrUnsupportedTransferCoding, "Transfer-Encoding %q in an HTTP/1.0 message", excerpt(te))
		}
		// RFC 9112 6.1 and 7: the only coding ptproxy decodes is chunked,
		// and it must be the only one, in exactly one field line. 501 is
		// what RFC 9112 6.1 suggests for unknown codings; ptproxy answers
		// 400 because every such message is treated as a smuggling attempt.
		if teCount > 1 {
			return Framing{}, bad(ErrUnsupportedTransferCoding, "%d Transfer-Encoding field lines", teCount)
		}
		if !EqualFold(te, "chunked") {
			return Framing{}, bad(ErrUnsupportedTransferCoding, "Transfer-Encoding %q is not exactly \"chunked\"", excerpt(te))
		}
		chunked = true
	}
	// RFC 9112 6.1: a message with both is a smuggling attempt; RFC 9112
	// 6.3 item 3 says it "ought to be handled as an error". It is, for
	// responses too.
	if chunked && clCount > 0 {
		return Framing{}, bad(ErrLengthAndChunked, "Transfer-Encoding %q with Content-Length %q", excerpt(te), excerpt(cl))
	}
	var length int64
	if clCount > 0 {
		n, ok := parseContentLength(cl)
		if !ok {
			return Framing{}, bad(ErrBadContentLength, "Content-Length %q", excerpt(cl))
		}
		length = n
	}
	if chunked {
		if err := checkDeclaredTrailers(h); err != nil {
			return Framing{}, err
		}
	}

	if isResponse {
		// RFC 9112 6.3 item 1: responses to HEAD and 1xx, 204 and 304
		// responses end with the head, whatever their fields say.
		if reqMethod == "HEAD" || status/100 == 1 || status == 204 || status == 304 {
			return Framing{Kind: NoBody}, nil
		}
	}
	switch {
	case chunked:
		return Framing{Kind: ChunkedBody}, nil
	case clCount > 0:
		return Framing{Kind: LengthBody, Length: length}, nil
	case isResponse:
		// RFC 9112 6.3 item 8.
		return Framing{Kind: UntilCloseBody}, nil
	default:
		// RFC 9112 6.3 item 7.
		return Framing{Kind: NoBody}, nil
	}
}

// parseContentLength parses Content-Length = 1*DIGIT (RFC 9110 8.6) into a
// non-negative int63. Leading zeros are accepted like net/http
// (strconv.ParseUint) does: "007" is 7. Signs, spaces, hex and commas are not.
func parseContentLength(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		d := int64(c - '0')
		if n > (math.MaxInt64-d)/10 {
			return 0, false // RFC 9112 6.3: an overflowing length is invalid
		}
		n = n*10 + d
	}
	return n, true
}

// checkDeclaredTrailers rejects a Trailer field (RFC 9110 6.6.2) announcing
// fields that must never be sent as trailers because they frame the message
// (RFC 9110 6.5.1). net/http rejects exactly these three; so do we.
func checkDeclaredTrailers(h Header) *Error {
	for i := range h {
		if !EqualFold(h[i].Name, "Trailer") {
			continue
		}
		for t := range Tokens(h[i].Value) {
			if EqualFold(t, "Transfer-Encoding") || EqualFold(t, "Content-Length") || EqualFold(t, "Trailer") {
				return bad(ErrTrailer, "Trailer field announces %q", excerpt(t))
			}
		}
	}
	return nil
}
