package pipeline

import (
	"context"
	"net/netip"
	"strings"

	"github.com/ptproxy/ptproxy/httpio"
)

// Policy selects the forwarding rules one side applies.
type Policy struct {
	Side Side
	// AddForwarded appends a Forwarded field (RFC 7239) describing the hop
	// the request arrived on.
	AddForwarded bool
}

// hopByHop are the fields that describe one connection and are never
// forwarded (RFC 9110 7.6.1), as the original lists them: it adds
// Proxy-Authenticate and Proxy-Authorization (credentials for this proxy,
// RFC 9110 11.7) and Trailer (its names travel in Head.Trailer and are
// declared again by whoever frames the body) to the RFC's list.
var hopByHop = []string{
	"connection",
	"keep-alive",
	"proxy-connection",
	"te",
	"transfer-encoding",
	"trailer",
	"upgrade",
	"proxy-authenticate",
	"proxy-authorization",
}

// RequestHead turns a request parsed off the caller's connection (client
// side) into a Head. It refuses what cannot cross the tunnel:
//   - CONNECT (KindMethodNotAllowed, 405; RFC 9110 9.3.6: tunnels are not
//     implemented);
//   - a request without an authority when there is none to give it: an
//     HTTP/1.0 request without Host (HTTP/1.1 without Host is already a 400
//     from httpio, RFC 9112 3.2) when peer.By is empty; KindBadRequest 400.
//
// Authority is req.Host, which for an absolute-form target is the target's
// authority (RFC 9112 3.2.2: it replaces the Host field). An HTTP/1.0
// request may come without Host (RFC 9112 3.2 requires it only from
// HTTP/1.1 clients; health checks and old tools send none), but HTTP/3 needs
// :authority (RFC 9114 4.3.1): it gets peer.By, the address the caller
// connected to, which is what it would have sent as Host (ClientOptions'
// DefaultHost overrides it). Close is set for
// "Connection: close" and for HTTP/1.0 without "Connection: keep-alive"
// (RFC 9112 9.3). Upgrade is "websocket" for a WebSocket handshake (see
// httpio.UpgradeProtocol): the request then crosses the tunnel as an
// extended CONNECT. Header is a copy of req.Header: Normalize removes what
// is not forwarded (Connection and Upgrade included).
func RequestHead(req *httpio.Request, peer Peer) (*Head, *Error) {
	if req.Method == "CONNECT" {
		return nil, NewError(KindMethodNotAllowed, ClientSide, MsgConnectNotImplemented, nil)
	}
	authority := req.Host
	if authority == "" {
		authority = peer.By
	}
	if authority == "" {
		return nil, NewError(KindBadRequest, ClientSide, MsgHostRequired, nil)
	}
	return &Head{
		Method:    req.Method,
		Authority: authority,
		Path:      req.Path,
		Header:    req.Header.Clone(),
		Body:      req.Body,
		Major:     req.Major,
		Minor:     req.Minor,
		Close:     closeAfter(req.Header, req.Major, req.Minor),
		Trailer:   trailerNames(req.Header),
		Peer:      peer,
		Upgrade:   httpio.UpgradeProtocol(req, upgradeWebSocket),
	}, nil
}

// closeAfter reports whether the connection a message came on closes after
// it (RFC 9112 9.3): "close" in Connection, or HTTP/1.0 without
// "keep-alive" in Connection.
func closeAfter(h httpio.Header, major, minor int) bool {
	if headerHasToken(h, "Connection", "close") {
		return true
	}
	return major == 1 && minor == 0 && !headerHasToken(h, "Connection", "keep-alive")
}

// headerHasToken reports whether any field named name lists token.
func headerHasToken(h httpio.Header, name, token string) bool {
	for v := range h.Values(name) {
		if httpio.HasToken(v, token) {
			return true
		}
	}
	return false
}

// trailerNames returns the names declared in the Trailer field(s)
// (RFC 9110 6.6.2), in order, without duplicates.
func trailerNames(h httpio.Header) []string {
	var names []string
	for v := range h.Values("Trailer") {
		for t := range httpio.Tokens(v) {
			if !httpio.ValidFieldName(t) || containsFold(names, t) {
				continue
			}
			names = append(names, t)
		}
	}
	return names
}

// Normalize applies the forwarding rules to a request head in place, on
// either side (pol.Side says which):
//
//   - It refuses CONNECT (405) and a head without Authority (400), which the
//     server side can receive from a peer that is not ptproxy.
//   - It removes every field named in Connection (RFC 9110 7.6.1; "close"
//     names no field), then the hop-by-hop fields (see RemoveHopByHop).
//   - It removes Content-Length (the framing travels in Head.Body and is
//     written again by the next hop), Host (it travels in Head.Authority, as
//     :authority over HTTP/3 and as the first field to the origin).
//     Expect is kept: 100-continue travels end to end, and the origin's
//     "100 Continue" comes back as an interim response over HTTP/3 that the
//     client relays to an HTTP/1.1 caller (RFC 9110 10.1.1, 15.2.1), so the
//     caller sends its body when the origin asks for it, as without a proxy.
//   - Everything else is kept in order, duplicates in order; nothing is
//     added (no Accept-Encoding, no User-Agent), except
//   - with pol.AddForwarded, one Forwarded field line after any existing
//     ones (see AppendForwarded).
//
// A response head (Status set) only loses its hop-by-hop fields.
func Normalize(h *Head, pol Policy) *Error {
	if h.Status != 0 {
		h.Header = RemoveHopByHop(h.Header)
		return nil
	}
	if h.Method == "CONNECT" {
		return NewError(KindMethodNotAllowed, pol.Side, MsgConnectNotImplemented, nil)
	}
	if h.Authority == "" {
		return NewError(KindBadRequest, pol.Side, MsgHostRequired, nil)
	}
	// EndpointField is ptproxy's own: one a caller sent would pick the
	// server's endpoint in its stead (the server takes it out before
	// Normalize, see Handler.ServeStream).
	h.Header = removeFields(RemoveHopByHop(h.Header), "content-length", "host", EndpointField)
	if pol.AddForwarded {
		h.Header = AppendForwarded(h.Header, h.Peer)
	}
	return nil
}

// RemoveHopByHop removes, in place, the fields named in Connection (except
// the token "close", which names no field) and the hop-by-hop fields:
// Connection, Keep-Alive, Proxy-Connection, TE, Transfer-Encoding, Trailer,
// Upgrade, Proxy-Authenticate, Proxy-Authorization (RFC 9110 7.6.1 and the
// original's list). The other fields keep their order. It returns the
// shortened slice.
func RemoveHopByHop(h httpio.Header) httpio.Header {
	drop := hopByHop
	for v := range h.Values("Connection") {
		for t := range httpio.Tokens(v) {
			if !httpio.EqualFold(t, "close") {
				if len(drop) == len(hopByHop) {
					drop = append([]string(nil), hopByHop...)
				}
				drop = append(drop, t)
			}
		}
	}
	return removeFields(h, drop...)
}

// removeFields removes, in place, every field whose name is one of names
// (ASCII case-insensitive) and returns the shortened slice.
func removeFields(h httpio.Header, names ...string) httpio.Header {
	j := 0
	for _, f := range h {
		if containsFold(names, f.Name) {
			continue
		}
		h[j] = f
		j++
	}
	clear(h[j:])
	return h[:j]
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if httpio.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// AppendForwarded appends one Forwarded field line (RFC 7239 section 4)
// describing the hop p, after any existing Forwarded fields, which are
// neither merged with nor validated (the origin must not trust what it did
// not receive from ptproxy itself):
//
//	Forwarded: for="192.0.2.1:51234";by="127.0.0.1:8080";proto=http
//	Forwarded: for="[2001:db8::1]:443";by="[::]:20010";proto=http3
//
// Node values follow RFC 7239 section 6: an IPv6 address is bracketed, and
// a value that is not a token (anything with ':' or '[') is a quoted-string.
// An address that is empty or not an IP address (a Unix socket, say)
// becomes the token unknown (section 6.3). proto is omitted when p.Proto is
// empty; "http3" on the server side is the original's (non-standard) value.
func AppendForwarded(h httpio.Header, p Peer) httpio.Header {
	var b strings.Builder
	b.WriteString("for=")
	b.WriteString(forwardedValue(forwardedNode(p.For)))
	b.WriteString(";by=")
	b.WriteString(forwardedValue(forwardedNode(p.By)))
	if p.Proto != "" {
		b.WriteString(";proto=")
		b.WriteString(forwardedValue(p.Proto))
	}
	// Insert after the last existing Forwarded field line, so the list stays
	// in hop order even if other fields follow it.
	at := len(h)
	for i := len(h) - 1; i >= 0; i-- {
		if httpio.EqualFold(h[i].Name, "Forwarded") {
			at = i + 1
			break
		}
	}
	return append(h[:at:at], append(httpio.Header{{Name: "Forwarded", Value: b.String()}}, h[at:]...)...)
}

// forwardedNode renders an address as an RFC 7239 node: "ip:port",
// "[ipv6]:port", a bare IP, or "unknown". Zones are dropped (the grammar
// has none) and IPv4-mapped IPv6 addresses, as a dual-stack socket reports
// them, are written as IPv4.
func forwardedNode(addr string) string {
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		ip := ap.Addr().Unmap().WithZone("")
		return netip.AddrPortFrom(ip, ap.Port()).String()
	}
	if ip, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]")); err == nil {
		ip = ip.Unmap().WithZone("")
		if ip.Is6() {
			return "[" + ip.String() + "]"
		}
		return ip.String()
	}
	return "unknown"
}

// forwardedValue writes v as a token when it is one, else as a
// quoted-string (RFC 7239 section 4, RFC 9110 5.6.4).
func forwardedValue(v string) string {
	if httpio.ValidFieldName(v) { // a field-name is exactly a token
		return v
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(v); i++ {
		if v[i] == '"' || v[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(v[i])
	}
	b.WriteByte('"')
	return b.String()
}

// ResponseHead turns a response read from the origin (server side) into a
// Head: Status, the end-to-end fields (RemoveHopByHop) in order, the
// trailer names declared in Trailer, and the framing in Body: LengthBody n
// stays, ChunkedBody stays, UntilCloseBody becomes ChunkedBody (the length
// is unknown; over HTTP/3 the stream end delimits it), NoBody stays.
//
// Content-Length is removed when it frames a body. In a response without a
// body it is metadata, the length a GET would have had (RFC 9110 8.6): it is
// kept, as an ordinary field, for a HEAD answer and 304, and dropped for 1xx
// and 204, where RFC 9110 8.6 forbids it. Close is set when the origin
// connection cannot be reused (Connection: close, HTTP/1.0 without
// keep-alive, a close-delimited body).
func ResponseHead(resp *httpio.Response) *Head {
	body := resp.Body
	if body.Kind == httpio.UntilCloseBody {
		body = httpio.Framing{Kind: httpio.ChunkedBody}
	}
	h := &Head{
		Status:  resp.Status,
		Body:    body,
		Major:   resp.Major,
		Minor:   resp.Minor,
		Close:   resp.Body.Kind == httpio.UntilCloseBody || closeAfter(resp.Header, resp.Major, resp.Minor),
		Trailer: trailerNames(resp.Header),
	}
	hdr := RemoveHopByHop(resp.Header.Clone())
	if body.Kind != httpio.NoBody || !lengthIsMetadata(resp.Status) {
		hdr = removeFields(hdr, "content-length")
	}
	h.Header = hdr
	return h
}

// lengthIsMetadata reports whether a Content-Length in a bodiless response
// with this status is forwarded (HEAD answers, 304) rather than dropped
// (1xx, 204: RFC 9110 8.6 forbids it there).
func lengthIsMetadata(status int) bool {
	return status >= 200 && status != 204
}

// NormalizeStage is Normalize as a stage of its own, for pipelines built
// from separate stages (tests, tools). ptproxy's exchanges call Normalize
// inline instead, saving a goroutine hand-off per exchange; both run the
// same function.
//
// It applies Normalize to every *Head passing through and
// forwards *Chunk, *End and *Fail untouched. When Normalize refuses a head,
// it sends a *Fail in its place and releases the rest of that exchange
// (its body chunks up to and including its *End), then goes on with the
// next exchange.
func NormalizeStage(pol Policy) Stage {
	return func(ctx context.Context, in <-chan Msg, out chan<- Msg) error {
		for {
			m, ok := Recv(ctx, in)
			if !ok {
				return context.Cause(ctx)
			}
			if h, isHead := m.(*Head); isHead {
				if err := Normalize(h, pol); err != nil {
					if serr := Send(ctx, out, &Fail{Err: err, ex: h.ex}); serr != nil {
						return serr
					}
					if !drainExchange(ctx, in) {
						return context.Cause(ctx)
					}
					continue
				}
			}
			if err := Send(ctx, out, m); err != nil {
				return err
			}
		}
	}
}
