package pipeline

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ptproxy/ptproxy/httpio"
)

// This file converts heads across the HTTP/3 hop. quic-go's http3 package
// speaks net/http types, so the ordered field lists become maps there and
// come back sorted by name (duplicates keep their order), which keeps the
// output deterministic. The conversions are pure; the golden tests in
// rewrite_test.go pin what crosses the tunnel.

// HTTP3Request builds the request the client sends over the tunnel for h,
// a normalized request head. Body is left nil: the caller sets it, and must
// leave it nil (or http.NoBody) for NoBody and for LengthBody with Length 0,
// because quic-go treats a non-nil body with ContentLength 0 as unknown
// length and would drop the "content-length: 0" the caller sent.
//
//   - URL: scheme https, Host h.Authority, and a path for which quic-go's
//     :path is exactly h.Path (see requestURL); Host is h.Authority, so
//     :authority carries it (RFC 9114 4.3.1).
//   - Header: h.Header in order (names canonicalized, so fields whose names
//     differ only in case join one key in arrival order). When the caller
//     sent no User-Agent, the key is present with no value, which stops
//     quic-go from adding its own "Go-http-client" (encodeHeaders skips a
//     User-Agent with no value or an empty first value).
//   - ContentLength: n for LengthBody, -1 for ChunkedBody, 0 for NoBody.
//     quic-go sends content-length for n > 0, and for 0 with POST, PUT and
//     PATCH (shouldSendReqContentLength).
//   - Trailer: the declared trailer names as keys (nil values), so quic-go
//     declares them in a trailer field and sends the values the caller
//     fills in after the body.
func HTTP3Request(ctx context.Context, h *Head) *http.Request {
	hdr := make(http.Header, len(h.Header)+1)
	for _, f := range h.Header {
		k := http.CanonicalHeaderKey(f.Name)
		if k == "Host" || k == "Content-Length" {
			continue // carried by :authority and ContentLength
		}
		hdr[k] = append(hdr[k], f.Value)
	}
	if _, ok := hdr["User-Agent"]; !ok {
		hdr["User-Agent"] = nil
	}
	var cl int64
	switch h.Body.Kind {
	case httpio.LengthBody:
		cl = h.Body.Length
	case httpio.ChunkedBody, httpio.UntilCloseBody:
		cl = -1
	}
	var trailer http.Header
	if len(h.Trailer) > 0 {
		trailer = make(http.Header, len(h.Trailer))
		for _, n := range h.Trailer {
			trailer[http.CanonicalHeaderKey(n)] = nil
		}
	}
	req := &http.Request{
		Method:        h.Method,
		URL:           requestURL(h.Authority, h.Path),
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        hdr,
		ContentLength: cl,
		Host:          h.Authority,
		Trailer:       trailer,
	}
	return req.WithContext(ctx)
}

// requestURL returns an https URL for authority whose RequestURI is target
// (origin-form "/path?query", or "*"), so that quic-go sends :path = target
// byte for byte: no re-escaping, no cleaning, "?" with an empty query kept.
//
// The path goes in Opaque, which RequestURI returns verbatim, except when it
// starts with "//": RequestURI would then read it as a network path
// ("https://..."). Such a path goes in Path/RawPath when url.URL reproduces
// it (EscapedPath accepts RawPath); otherwise it goes in Opaque prefixed
// with "//authority": RequestURI yields "https://authority//..." and
// quic-go, finding no valid :path, strips "https://authority" off it (the
// net/http Opaque convention, golang.org/issue/16847).
func requestURL(authority, target string) *url.URL {
	u := &url.URL{Scheme: "https", Host: authority}
	if target == "*" {
		u.Opaque = "*"
		return u
	}
	path, query, hasQuery := strings.Cut(target, "?")
	u.RawQuery = query
	u.ForceQuery = hasQuery && query == ""
	if !strings.HasPrefix(path, "//") {
		u.Opaque = path
		return u
	}
	if p, err := url.PathUnescape(path); err == nil {
		u.Path, u.RawPath = p, path
		if u.EscapedPath() == path {
			return u
		}
		u.Path, u.RawPath = "", ""
	}
	u.Opaque = "//" + authority + path
	return u
}

// HeadFromHTTP3Request turns the request quic-go's http3 server hands to the
// handler into a Head (server side). quic-go sets Host from :authority and
// RequestURI to :path as received (URL is parsed from it; RequestURI is
// used so nothing is re-escaped), Header with canonical names and all
// Cookie lines joined by "; " (RFC 9114 4.2.1), ContentLength from
// content-length or -1, and Trailer from the declared trailer names.
//
// Header is r.Header sorted by name, duplicates in order, without
// Content-Length (framing is in Body: LengthBody for ContentLength >= 0,
// else ChunkedBody; the source may make it NoBody when the stream ends
// right after the head). Trailer is the sorted keys of r.Trailer. The
// version is 1.1: the next hop is HTTP/1.1.
func HeadFromHTTP3Request(r *http.Request, peer Peer) *Head {
	path := r.RequestURI
	if path == "" && r.URL != nil {
		path = r.URL.RequestURI()
	}
	host := r.Host
	if host == "" && r.URL != nil {
		host = r.URL.Host
	}
	return &Head{
		Method:    r.Method,
		Authority: host,
		Path:      path,
		Header:    sortedFields(r.Header, "Content-Length", "Trailer"),
		Body:      framingFromLength(r.ContentLength),
		Major:     1,
		Minor:     1,
		Trailer:   sortedKeys(r.Trailer),
		Peer:      peer,
	}
}

// HeadFromHTTP3Response turns the response the tunnel returned into a Head
// (client side). method is the request's method; it is kept in Head.Method
// so CallerResponseFields can tell a HEAD answer.
//
// Header is resp.Header sorted by name, duplicates in order. Body is NoBody
// for 1xx, 204, 304 and an answer to HEAD, LengthBody for ContentLength >=
// 0, else ChunkedBody. Content-Length is removed from Header when it frames
// the body; in a HEAD answer or a 304 it is kept as metadata (see
// ResponseHead). Trailer is the sorted keys of resp.Trailer. Major/Minor are
// 1.1; the client forwarder sets them to the caller's version.
func HeadFromHTTP3Response(resp *http.Response, method string) *Head {
	h := &Head{
		Method:  method,
		Status:  resp.StatusCode,
		Major:   1,
		Minor:   1,
		Trailer: sortedKeys(resp.Trailer),
	}
	if method == http.MethodHead || !bodyAllowed(resp.StatusCode) {
		h.Body = httpio.Framing{Kind: httpio.NoBody}
		if lengthIsMetadata(resp.StatusCode) {
			h.Header = sortedFields(resp.Header, "Trailer")
		} else {
			h.Header = sortedFields(resp.Header, "Content-Length", "Trailer")
		}
		return h
	}
	h.Body = framingFromLength(resp.ContentLength)
	h.Header = sortedFields(resp.Header, "Content-Length", "Trailer")
	return h
}

// bodyAllowed reports whether a response with this status can have a body
// (RFC 9110 6.4.1: not 1xx, 204, 304).
func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

func framingFromLength(n int64) httpio.Framing {
	if n >= 0 {
		return httpio.Framing{Kind: httpio.LengthBody, Length: n}
	}
	return httpio.Framing{Kind: httpio.ChunkedBody}
}

// sortedFields turns a net/http header map into an ordered field list,
// sorted by name, duplicates in order, without the skipped names (given in
// canonical form). Keys holding no values yield nothing.
func sortedFields(m http.Header, skip ...string) httpio.Header {
	if len(m) == 0 {
		return nil
	}
	names := make([]string, 0, len(m))
	n := 0
	for k, vv := range m {
		if slices.Contains(skip, http.CanonicalHeaderKey(k)) {
			continue
		}
		names = append(names, k)
		n += len(vv)
	}
	slices.Sort(names)
	h := make(httpio.Header, 0, n)
	for _, k := range names {
		for _, v := range m[k] {
			h = append(h, httpio.Field{Name: k, Value: v})
		}
	}
	return h
}

func sortedKeys(m http.Header) []string {
	if len(m) == 0 {
		return nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// WriteHTTP3ResponseHead writes h as the HTTP/3 response head (server
// side): w.Header() is cleared and gets h.Header (canonical names, duplicates in order),
// Content-Length for LengthBody, and a Trailer field declaring h.Trailer,
// which quic-go turns into trailers sent after the body. quic-go's own
// additions are suppressed: Date (a nil Date key; the client adds Date when
// the origin sent none, RFC 9110 6.6.1) and content sniffing (a nil
// Content-Type key when there is none). Then it calls WriteHeader(h.Status);
// the caller flushes, so the head leaves before the first body byte and
// quic-go does not add a Content-Length of its own.
func WriteHTTP3ResponseHead(w http.ResponseWriter, h *Head) {
	hdr := w.Header()
	clear(hdr) // what an interim head set must not leak into the next one
	for _, f := range h.Header {
		k := http.CanonicalHeaderKey(f.Name)
		hdr[k] = append(hdr[k], f.Value)
	}
	if h.Body.Kind == httpio.LengthBody {
		hdr["Content-Length"] = []string{strconv.FormatInt(h.Body.Length, 10)}
	}
	if len(h.Trailer) > 0 {
		hdr["Trailer"] = []string{strings.Join(h.Trailer, ", ")}
	}
	if _, ok := hdr["Date"]; !ok {
		hdr["Date"] = nil
	}
	if _, ok := hdr["Content-Type"]; !ok {
		hdr["Content-Type"] = nil
	}
	w.WriteHeader(h.Status)
}

// OriginRequestFields is the field list the server writes to the origin for
// h, a normalized request head: Host first (RFC 9112 3.2: "a user agent
// SHOULD generate Host as the first field"; its value is h.Authority, the
// caller's Host or absolute-form authority), then h.Header in order, then a
// Trailer declaration for a chunked body with declared trailers, then the
// framing: "Content-Length: n" for LengthBody (also n == 0: the caller sent
// it), "Transfer-Encoding: chunked" for ChunkedBody, nothing for NoBody.
func OriginRequestFields(h *Head) httpio.Header {
	out := make(httpio.Header, 0, len(h.Header)+3)
	out = append(out, httpio.Field{Name: "Host", Value: h.Authority})
	out = append(out, h.Header...)
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
