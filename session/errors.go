package session

import (
	"errors"
	"fmt"

	"github.com/ptproxy/ptproxy/httpio/h3"
	"github.com/quic-go/quic-go"
)

var (
	// ErrNotReady is matched (errors.Is) by the error [Client.RoundTrip]
	// returns when no session became usable within ClientOptions.SessionWait
	// (at once when that is 0). The concrete error is a [*NotReadyError]
	// carrying the latest failure reason.
	ErrNotReady = errors.New("tunnel not established")

	// ErrDraining is returned by [Client.RoundTrip] once [Client.Drain] was
	// called or the client stopped: no new requests are taken.
	ErrDraining = errors.New("tunnel draining")

	// ErrClosed is returned when a lifecycle method is used after the actor
	// stopped (Run twice, Listen after Close, ...).
	ErrClosed = errors.New("session closed")

	// ErrIllegalTransition is wrapped by the error of an event that is not
	// legal in the current state (see [Transitions]).
	ErrIllegalTransition = errors.New("illegal transition")

	// ErrServerClosed is the readable lost-reason for a server that closed
	// the connection cleanly (CONNECTION_CLOSE with H3_NO_ERROR), which
	// usually means it restarts. The original logged the same text.
	ErrServerClosed = errors.New("server closed the connection")

	// ErrServerGoaway is the lost-reason when the server sent GOAWAY and
	// the HTTP/3 layer then closed the idle connection with H3_NO_ERROR.
	ErrServerGoaway = errors.New("server is shutting down (GOAWAY)")

	// ErrClientClosed is the per-connection close reason logged by the
	// server when a client closed cleanly with H3_NO_ERROR.
	ErrClientClosed = errors.New("client closed the connection")
)

// NotReadyError is the error of [Client.RoundTrip] when there is no usable
// session, and of a request the server refused unprocessed that could not
// be sent again.
// errors.Is(err, ErrNotReady) is true; Unwrap returns the reason.
type NotReadyError struct {
	Reason error // latest failure (attempt or lost session); nil before any
}

func (e *NotReadyError) Error() string {
	if e.Reason == nil {
		return ErrNotReady.Error()
	}
	return ErrNotReady.Error() + ": " + e.Reason.Error()
}

func (e *NotReadyError) Is(target error) bool { return target == ErrNotReady }
func (e *NotReadyError) Unwrap() error        { return e.Reason }

// PeerRejectedError is how the server refuses a client certificate; its
// text is both the TLS-level error and the Warn log reason.
type PeerRejectedError struct {
	Reason string // e.g. `client certificate for "x" does not match peer_hostname "y"`
	Err    error  // underlying x509 error, if any
}

func (e *PeerRejectedError) Error() string { return e.Reason }
func (e *PeerRejectedError) Unwrap() error { return e.Err }

// lostReason turns the cause of a connection's end into a readable reason.
// local reports whether the application error was sent by us (remote=false
// in quic-go's terms): a local H3_NO_ERROR close that we did not initiate is
// the HTTP/3 layer honouring the server's GOAWAY.
func lostReason(cause error) error {
	if cause == nil {
		return errors.New("connection closed")
	}
	if ae, ok := errors.AsType[*quic.ApplicationError](cause); ok &&
		ae.ErrorCode == quic.ApplicationErrorCode(h3.ErrCodeNoError) {
		if ae.Remote {
			return ErrServerClosed
		}
		return ErrServerGoaway
	}
	return cause
}

// serverCloseReason is the server-side counterpart of lostReason.
func serverCloseReason(cause error) error {
	if cause == nil {
		return errors.New("connection closed")
	}
	if ae, ok := errors.AsType[*quic.ApplicationError](cause); ok &&
		ae.ErrorCode == quic.ApplicationErrorCode(h3.ErrCodeNoError) {
		if ae.Remote {
			return ErrClientClosed
		}
		return fmt.Errorf("closed by this server (%s)", h3.ErrCodeNoError)
	}
	return cause
}

// PublicClass is what a caller answered 503 may learn of why there is no
// session: the class of the failure, never the peer's address or the TLS
// detail, which the log carries.
func (e *NotReadyError) PublicClass() string {
	err := e.Reason
	var (
		te  *quic.TransportError
		ie  *quic.IdleTimeoutError
		he  *quic.HandshakeTimeoutError
		ae  *quic.ApplicationError
		sre *quic.StatelessResetError
	)
	switch {
	case err == nil || errors.Is(err, errFirstAttempt):
		return "first connection attempt in progress"
	case errors.Is(err, ErrServerGoaway), errors.Is(err, ErrServerClosed):
		return "peer is restarting or shutting down"
	case errors.As(err, &te) && te.ErrorCode.IsCryptoError():
		if te.Remote {
			return "peer refused our certificate"
		}
		return "peer certificate refused"
	case errors.As(err, &ie), errors.As(err, &he):
		return "peer did not answer"
	case errors.As(err, &sre):
		return "peer lost the session"
	case errors.As(err, &ae):
		return "peer closed the session"
	case errors.As(err, &te):
		return "connection to peer failed"
	default:
		return "peer unreachable"
	}
}
