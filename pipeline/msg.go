// Package pipeline carries proxied exchanges between HTTP/1.1 and the
// HTTP/3 tunnel. The client side (ServeClientConn) reads requests from a
// caller's connection, normalizes them and carries each through a Tunnel;
// the server side (Handler.ServeStream) serves a tunnel stream from a
// pooled origin connection. Each exchange runs as plain function calls on
// the goroutine of its connection or stream; only a request body gets a
// goroutine of its own (docs/pipeline.md).
//
// Msg, Stage and Run are the same rules in channel form, for pipelines
// assembled from separate stages (NormalizeStage).
package pipeline

import (
	"github.com/ptproxy/ptproxy/httpio"
)

// Msg is what travels between stages. It is sealed: the only
// implementations are *Head, *Chunk, *End and *Fail.
//
// Ownership: a Msg belongs to the stage that last received it. A stage that
// forwards a Msg must not touch it afterwards; the final consumer of a *Chunk
// calls Release on it.
type Msg interface{ msg() }

// Head is a request or response head in transit.
//
// For a request, Method, Authority and Path are set; for a response, Status
// (and Method, the method of the request it answers).
// Header holds the end-to-end fields in order, without framing fields
// (Content-Length, Transfer-Encoding) and without hop-by-hop fields once the
// normalizer has run: framing is carried by Body and written by the sink.
type Head struct {
	Method    string
	Authority string // Host for HTTP/1.1, :authority for HTTP/3
	Path      string // origin-form target, "*" for OPTIONS *
	Status    int
	Header    httpio.Header

	// Body says how the body that follows is delimited at the source:
	// NoBody (End follows at once), LengthBody (exactly Length bytes of
	// Chunks follow), ChunkedBody (length unknown; each Chunk is one chunk).
	Body httpio.Framing

	// Major and Minor are the HTTP/1.x version of the caller, so the client
	// sink can pick framing an HTTP/1.0 caller understands.
	Major, Minor int
	// Close is set when the connection the exchange came on must be closed
	// after this exchange (Connection: close, HTTP/1.0, a read error).
	Close bool
	// Trailer lists the trailer field names the sender declared, if any.
	Trailer []string
	// Upgrade is the protocol a request switches its connection to
	// ("websocket"), or "": an HTTP/1.1 Upgrade on the caller's and the
	// origin's side, an extended CONNECT (RFC 9220) across the tunnel.
	Upgrade string

	// Peer carries addresses for the Forwarded rules.
	Peer Peer

	// ex tracks the exchange for the Observer; a response head carries its
	// request's.
	ex *exchange
}

// Peer describes the hop a request arrived on.
type Peer struct {
	// For is the address of the party that sent the request to us
	// ("ip:port"), By the local address it arrived at.
	For, By string
	// Proto is the protocol it arrived over: "http" on the client side,
	// "http3" on the server side.
	Proto string
}

// Chunk is a piece of body. For chunked bodies it is exactly one chunk as
// received (or a piece of one larger than the buffer); for length-delimited
// bodies chunk boundaries carry no meaning.
type Chunk struct {
	Data []byte
	buf  *[]byte // pooled backing array, nil if Data is not pooled
}

// End closes a message. Trailers are the trailer fields (chunked bodies
// only). Err, when set, means the body was cut short: the sink must not
// make the message look complete.
type End struct {
	Trailers httpio.Header
	Err      error
	// Close asks the client sink to close the caller's connection after this
	// message even though it is complete: the request body was not read to
	// its end, so the connection cannot carry another request.
	Close bool
}

// Fail asks the sink to answer with a synthetic response instead of the
// exchange (when no response head was sent yet) and then close.
type Fail struct {
	Err *Error
	ex  *exchange
}

func (*Head) msg()  {}
func (*Chunk) msg() {}
func (*End) msg()   {}
func (*Fail) msg()  {}
