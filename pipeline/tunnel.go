package pipeline

import (
	"context"
	"errors"

	"github.com/ptproxy/ptproxy/httpio"
	"github.com/ptproxy/ptproxy/httpio/h3"
)

// The pipeline's view of the HTTP/3 session: the session package
// implements these interfaces on its QUIC connection with the codec of
// httpio/h3, and the composition root (cmd/internal/app) hands them over.
// Nothing here knows about QUIC; tests implement them in memory
// (tunnel_test.go).

// Tunnel carries exchanges over the HTTP/3 session (client side).
type Tunnel interface {
	// Open starts one exchange: the request head goes out at once; end means no body follows (HEADERS, then FIN).
	// Errors: errors.Is(err, ErrTunnelDown) → 503 (no session), errors.Is(err, ErrDraining) → 503, other → 502.
	//
	// ctx bounds Open itself (the wait for a session): it ends when the
	// caller hangs up or the client stops. Once Open has returned, the
	// stream is ended by Cancel and Close only; ctx may be cancelled after
	// Close without effect. h and its Fields are not modified until Close,
	// so a session may send them again (a request refused unprocessed).
	Open(ctx context.Context, h *h3.Head, end bool) (TunnelStream, error)
}

// TunnelStream is one request stream, seen from the client. Not safe for concurrent use except that
// the request-side methods (WriteData, CloseWrite) may run on one goroutine while the response-side
// methods (ReadHead, NextData, ReadData, FrameLeft, Trailers) run on another, and Cancel may be called from any goroutine.
//
// What the pipeline relies on:
//   - Cancel makes every blocked or later call on either side return an
//     error promptly (WriteData blocked on flow control included), and
//     resets the stream so the server side's context ends;
//   - a stream the server resets, or that dies with its connection, makes
//     the response-side calls return an error (never io.EOF): a body cut
//     short must not look complete;
//   - NextData returns io.EOF only after the whole body and the trailers
//     arrived and matched content-length (h3.Reader semantics);
//   - Close is called exactly once per successful Open, after the last
//     call on both sides (the pipeline joins its body goroutine first).
type TunnelStream interface {
	WriteData(p []byte) error                // one DATA frame per call
	CloseWrite(trailers httpio.Header) error // trailers if any, then FIN
	ReadHead() (*h3.Head, error)             // 1xx interim heads, then the final head; errors classified as Open's
	SetNoBody()
	NextData() (int64, error)
	ReadData(p []byte) (int, error)
	FrameLeft() int64
	Trailers() httpio.Header
	Cancel() // reset both directions (H3_REQUEST_CANCELLED); idempotent, any goroutine
	Close()  // the exchange is over: always called exactly once; cancels first if the response did not end cleanly
}

// ServerStream is one request stream, seen from the server; the session reads and validates the request head before the handler runs.
//
// The handler owns the Head Request returns and may modify it.
// Handler.ServeStream calls the response-side methods (WriteHead,
// WriteData, WriteTrailers, Close, Reset) on the goroutine it runs on; the
// request body (NextData, ReadData, FrameLeft, Trailers) may be read on
// one other goroutine at the same time; StopReading may be called from
// any goroutine and must make a blocked NextData or ReadData return an
// error promptly. ServeStream always ends the stream with Close or Reset
// before it returns, and has stopped reading the request body by then;
// the session may release the stream's resources once it returned.
type ServerStream interface {
	Context() context.Context // ends when the stream or its connection is gone
	RemoteAddr() string
	LocalAddr() string
	// PeerIdentity is the client's identity: the accepted client name
	// (general.peer_hostname or one of general.peer_hostnames) its
	// certificate matched, for the endpoints' access rules.
	PeerIdentity() string
	Request() *h3.Head
	NextData() (int64, error) // request body, h3.Reader semantics
	ReadData(p []byte) (int, error)
	FrameLeft() int64
	Trailers() httpio.Header
	StopReading()             // STOP_SENDING: the rest of the request body is not wanted (early response)
	WriteHead(*h3.Head) error // 1xx or final response head
	WriteData(p []byte) error // one DATA frame
	WriteTrailers(httpio.Header) error
	Close() error // FIN: the response is complete
	Reset()       // RESET_STREAM (H3_INTERNAL_ERROR): the response is cut
}

// Errors a Tunnel returns that are answered with 503 instead of 502.
var (
	ErrTunnelDown = errors.New("tunnel not established")
	ErrDraining   = errors.New("shutting down")
)
