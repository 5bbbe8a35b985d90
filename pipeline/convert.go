package pipeline

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ptproxy/ptproxy/httpio"
	"github.com/ptproxy/ptproxy/httpio/h3"
)

// This file converts heads across the HTTP/3 hop and towards the HTTP/1.1
// peers. Fields cross in the order they arrived, duplicates kept, names as
// the wire has them (HTTP/3 lower-cases them); only the framing fields are
// placed by the converter: content-length and the trailer declaration go
// first in an HTTP/3 head, and last in an HTTP/1.1 head. The conversions are
// pure; the golden tests in rewrite_test.go pin what crosses the tunnel.

// RequestH3Head is the HTTP/3 request head the client sends for h, a
// normalized request head (client side):
//   - :method h.Method, :scheme https, :authority h.Authority (Host is not
//     repeated as a field, RFC 9114 4.3.1), :path h.Path byte for byte;
//   - the framing: "content-length: n" for LengthBody (also n == 0: the
//     caller sent it), or for a chunked body with declared trailers a
//     "trailer" field naming those allowed in trailers (see validTrailer);
//   - then h.Header as it is: in order, duplicates kept, names as received.
//
// ContentLength is n for LengthBody, else -1. The Head shares h.Header's
// array when no framing field is added.
//
// A request that switches protocols (h.Upgrade) becomes an extended
// CONNECT (RFC 9220): :method CONNECT and :protocol h.Upgrade, the rest as
// above; its stream then carries the new protocol's bytes as DATA.
func RequestH3Head(h *Head) *h3.Head {
	cl := int64(-1)
	if h.Body.Kind == httpio.LengthBody {
		cl = h.Body.Length
	}
	method := h.Method
	if h.Upgrade != "" {
		method = http.MethodConnect
	}
	return &h3.Head{
		Method:        method,
		Scheme:        "https",
		Authority:     h.Authority,
		Path:          h.Path,
		Protocol:      h.Upgrade,
		Fields:        h3Fields(h),
		ContentLength: cl,
	}
}

// ResponseH3Head is the HTTP/3 response head the server sends for h, a
// response head from ResponseHead or Synthesize (server side): :status,
// then the framing as in RequestH3Head ("content-length: n" for
// LengthBody; a "trailer" declaration for a chunked body), then h.Header in
// order. A Content-Length that is metadata (HEAD answers, 304) is part of
// h.Header and passes through in its place. 1xx heads carry h.Header only.
func ResponseH3Head(h *Head) *h3.Head {
	if h.Status < 200 {
		return &h3.Head{Status: h.Status, Fields: h.Header, ContentLength: -1}
	}
	cl := int64(-1)
	if h.Body.Kind == httpio.LengthBody {
		cl = h.Body.Length
	}
	return &h3.Head{Status: h.Status, Fields: h3Fields(h), ContentLength: cl}
}

// h3Fields is h.Header preceded by the framing fields of h's body.
func h3Fields(h *Head) httpio.Header {
	var trailer string
	switch h.Body.Kind {
	case httpio.LengthBody:
		out := make(httpio.Header, 0, len(h.Header)+1)
		out = append(out, httpio.Field{Name: "content-length", Value: strconv.FormatInt(h.Body.Length, 10)})
		return append(out, h.Header...)
	case httpio.ChunkedBody, httpio.UntilCloseBody:
		trailer = joinTrailerNames(h.Trailer)
	}
	if trailer == "" {
		return h.Header
	}
	out := make(httpio.Header, 0, len(h.Header)+1)
	out = append(out, httpio.Field{Name: "trailer", Value: trailer})
	return append(out, h.Header...)
}

// joinTrailerNames is the value of a trailer declaration for names,
// without those that may not be sent as trailers.
func joinTrailerNames(names []string) string {
	var b strings.Builder
	for _, n := range names {
		if !validTrailer(n) {
			continue
		}
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		b.WriteString(n)
	}
	return b.String()
}

// HeadFromH3Request turns the request head the session read off a stream
// into a Head (server side), sharing r.Fields: Authority is :authority,
// Path is :path as received, Header the fields in order (Normalize then
// removes content-length, a host field and the hop-by-hop fields), Trailer
// the names a trailer field declares (those allowed in trailers). Body is
// LengthBody for a content-length, else ChunkedBody; ServeStream makes it
// NoBody when the stream ends right after the head. The version is 1.1:
// the next hop is HTTP/1.1.
//
// An extended CONNECT (RFC 9220) becomes the HTTP/1.1 request it stands
// for: a GET with Upgrade set to its :protocol and no body (the stream's
// DATA is the new protocol's, relayed once the origin switched).
func HeadFromH3Request(r *h3.Head, peer Peer) *Head {
	body := httpio.Framing{Kind: httpio.ChunkedBody}
	if r.ContentLength >= 0 {
		body = httpio.Framing{Kind: httpio.LengthBody, Length: r.ContentLength}
	}
	method, upgrade := r.Method, ""
	if r.Method == http.MethodConnect && r.Protocol != "" {
		method, upgrade = http.MethodGet, r.Protocol
		body = httpio.Framing{Kind: httpio.NoBody}
	}
	return &Head{
		Upgrade:   upgrade,
		Method:    method,
		Authority: r.Authority,
		Path:      r.Path,
		Header:    r.Fields,
		Body:      body,
		Major:     1,
		Minor:     1,
		Trailer:   h3TrailerNames(r.Fields),
		Peer:      peer,
	}
}

// HeadFromH3Response turns a final response head read off the tunnel into
// a Head (client side), sharing r.Fields. method is the request's method,
// kept in Head.Method so CallerResponseFields can tell a HEAD answer.
//
// Header is r.Fields in order without the hop-by-hop fields (the server
// never sends them; a peer that is not ptproxy must not smuggle them to
// the caller) and without content-length where it frames the body. Body is
// NoBody for 204, 304 and an answer to HEAD (a content-length there is
// metadata, kept as a field for HEAD answers and 304, see ResponseHead),
// LengthBody for a content-length, else ChunkedBody. Trailer is what a
// trailer field declares. Major/Minor are 1.1; the client sets them to the
// caller's version.
func HeadFromH3Response(r *h3.Head, method string) *Head {
	h := &Head{
		Method:  method,
		Status:  r.Status,
		Major:   1,
		Minor:   1,
		Trailer: h3TrailerNames(r.Fields),
	}
	hdr := RemoveHopByHop(r.Fields)
	switch {
	case method == http.MethodHead || !bodyAllowed(r.Status):
		h.Body = httpio.Framing{Kind: httpio.NoBody}
		if !lengthIsMetadata(r.Status) {
			hdr = removeFields(hdr, "content-length")
		}
	case r.ContentLength >= 0:
		h.Body = httpio.Framing{Kind: httpio.LengthBody, Length: r.ContentLength}
		hdr = removeFields(hdr, "content-length")
	default:
		h.Body = httpio.Framing{Kind: httpio.ChunkedBody}
		hdr = removeFields(hdr, "content-length")
	}
	h.Header = hdr
	return h
}

// h3TrailerNames is trailerNames without the names that may not be
// trailers.
func h3TrailerNames(h httpio.Header) []string {
	names := trailerNames(h)
	j := 0
	for _, n := range names {
		if validTrailer(n) {
			names[j] = n
			j++
		}
	}
	if j == 0 {
		return nil
	}
	return names[:j]
}

// bodyAllowed reports whether a response with this status can have a body
// (RFC 9110 6.4.1: not 1xx, 204, 304).
func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

// notTrailers are the fields never forwarded as trailers, nor declared in
// a trailer field: those that frame, route, authenticate or control the
// message, which RFC 9110 6.5.1 says a recipient must not trust from a
// trailer section (the list of Go's httpguts.ValidTrailerHeader, which
// quic-go applied before ptproxy had its own HTTP/3 codec, with Upgrade,
// which HTTP/3 forbids anywhere), and every If-* precondition.
var notTrailers = []string{
	"authorization", "cache-control", "connection", "content-encoding", "content-length",
	"content-range", "content-type", "expect", "host", "keep-alive", "max-forwards", "pragma",
	"proxy-authenticate", "proxy-authorization", "proxy-connection", "range", "realm", "te",
	"trailer", "transfer-encoding", "upgrade", "www-authenticate",
}

// validTrailer reports whether a field of this name may be forwarded as a
// trailer.
func validTrailer(name string) bool {
	if len(name) >= 3 && httpio.EqualFold(name[:3], "if-") {
		return false
	}
	return !containsFold(notTrailers, name)
}

// forwardTrailers returns the trailer fields that may be forwarded, in
// order: t itself when all may, else a filtered copy.
func forwardTrailers(t httpio.Header) httpio.Header {
	for i := range t {
		if !validTrailer(t[i].Name) {
			out := make(httpio.Header, 0, len(t)-1)
			out = append(out, t[:i]...)
			for _, f := range t[i+1:] {
				if validTrailer(f.Name) {
					out = append(out, f)
				}
			}
			return out
		}
	}
	return t
}

// OriginRequestFields is the field list the server writes to the origin for
// h, a normalized request head: Host first (RFC 9112 3.2: "a user agent
// SHOULD generate Host as the first field"; its value is h.Authority, the
// caller's Host or absolute-form authority), then h.Header in order, then a
// Trailer declaration for a chunked body with declared trailers, then the
// framing: "Content-Length: n" for LengthBody (also n == 0: the caller sent
// it), "Transfer-Encoding: chunked" for ChunkedBody, nothing for NoBody,
// except "Content-Length: 0" for a bodiless POST, PUT or PATCH (RFC 9110
// 8.6: a user agent normally sends it for a method that defines a meaning
// for content; net/http's client does, and some origins answer 411 without
// it). A request that switches protocols (Upgrade) ends with
// "Connection: Upgrade" and "Upgrade: <protocol>" instead of framing.
func OriginRequestFields(h *Head) httpio.Header {
	out := make(httpio.Header, 0, len(h.Header)+3)
	out = append(out, httpio.Field{Name: "Host", Value: h.Authority})
	out = append(out, h.Header...)
	if h.Upgrade != "" {
		// RFC 9110 7.8: the upgrade is hop-by-hop, so each hop asks anew.
		return append(out, httpio.Field{Name: "Connection", Value: "Upgrade"}, httpio.Field{Name: "Upgrade", Value: h.Upgrade})
	}
	if h.Body.Kind == httpio.NoBody && (h.Method == http.MethodPost || h.Method == http.MethodPut || h.Method == http.MethodPatch) {
		return append(out, httpio.Field{Name: "Content-Length", Value: "0"})
	}
	return appendFraming(out, h, true)
}

// appendFraming appends the Trailer declaration and the framing fields for
// h's body; chunked says whether a ChunkedBody is sent chunked.
func appendFraming(out httpio.Header, h *Head, chunked bool) httpio.Header {
	switch h.Body.Kind {
	case httpio.LengthBody:
		out = append(out, httpio.Field{Name: "Content-Length", Value: strconv.FormatInt(h.Body.Length, 10)})
	case httpio.ChunkedBody, httpio.UntilCloseBody:
		if chunked {
			if len(h.Trailer) > 0 {
				out = append(out, httpio.Field{Name: "Trailer", Value: strings.Join(h.Trailer, ", ")})
			}
			out = append(out, httpio.Field{Name: "Transfer-Encoding", Value: "chunked"})
		}
	}
	return out
}

// CallerFraming is how the body of the response h reaches its HTTP/1.x
// caller (h.Major/h.Minor are the caller's version, h.Method the request's
// method). It is the one decision both the head (CallerResponseFields) and
// the body writer (the client sink) follow, so the two cannot disagree:
//   - FrameNone: no body can follow (1xx, 204, 304, an answer to HEAD);
//   - FrameLength: Content-Length (h.Body.Length; 0 for NoBody);
//   - FrameChunked: chunked coding, for an HTTP/1.1 caller and a body of
//     unknown length, whether or not the connection closes afterwards
//     (closing does not end a chunked body; the caller still needs the
//     framing to tell a complete body from a cut one);
//   - FrameClose: close-delimited, for an HTTP/1.0 caller and a body of
//     unknown length (RFC 9112 7.1: HTTP/1.0 has no chunked coding); the
//     connection must close after it.
func CallerFraming(h *Head) Frame {
	switch {
	case !bodyAllowed(h.Status) || h.Method == http.MethodHead:
		return FrameNone
	case h.Body.Kind == httpio.NoBody || h.Body.Kind == httpio.LengthBody:
		return FrameLength
	case callerIs11(h):
		return FrameChunked
	default:
		return FrameClose
	}
}

// Frame is a body framing towards the caller; see CallerFraming.
type Frame uint8

const (
	FrameNone Frame = iota
	FrameLength
	FrameChunked
	FrameClose
)

// callerIs11 reports whether the caller speaks HTTP/1.1 (a Head without a
// version counts as 1.1).
func callerIs11(h *Head) bool { return !(h.Major == 1 && h.Minor == 0) }

// CallerResponseFields is the field list the client writes to the HTTP/1.x
// caller for the response h; h.Major/h.Minor are the caller's version and
// h.Method the request's method. In order:
//   - h.Header as is;
//   - Date from now (RFC 9110 6.6.1, http.TimeFormat) when h has none;
//   - the framing CallerFraming picks: "Content-Length: n" (0 for NoBody,
//     so the caller does not wait for a close), or a Trailer declaration (if
//     any) and "Transfer-Encoding: chunked", or nothing (close-delimited,
//     and responses that cannot have a body: a HEAD answer's or 304's own
//     Content-Length is part of h.Header and passes through);
//   - "Connection: close" when close is set (the sink sets it for FrameClose
//     too), else "Connection: keep-alive" for an HTTP/1.0 caller (who asked
//     for it, or close would be set).
func CallerResponseFields(h *Head, now time.Time, close bool) httpio.Header {
	out := make(httpio.Header, 0, len(h.Header)+4)
	out = append(out, h.Header...)
	if !h.Header.Has("Date") {
		out = append(out, httpio.Field{Name: "Date", Value: now.UTC().Format(http.TimeFormat)})
	}
	switch CallerFraming(h) {
	case FrameLength:
		n := int64(0)
		if h.Body.Kind == httpio.LengthBody {
			n = h.Body.Length
		}
		out = append(out, httpio.Field{Name: "Content-Length", Value: strconv.FormatInt(n, 10)})
	case FrameChunked:
		out = appendFraming(out, h, true)
	}
	switch {
	case close:
		out = append(out, httpio.Field{Name: "Connection", Value: "close"})
	case !callerIs11(h):
		out = append(out, httpio.Field{Name: "Connection", Value: "keep-alive"})
	}
	return out
}
