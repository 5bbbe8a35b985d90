package pipeline

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/ptproxy/ptproxy/httpio"
)

// Side says which ptproxy instance an error arose in; it picks the Server
// field of the synthetic response.
type Side uint8

const (
	ClientSide Side = iota // HTTP/1.1 in, HTTP/3 out
	ServerSide             // HTTP/3 in, HTTP/1.1 to the origin
)

func (s Side) String() string {
	switch s {
	case ClientSide:
		return "client"
	case ServerSide:
		return "server"
	}
	return "Side(" + strconv.Itoa(int(s)) + ")"
}

// Kind classifies why an exchange failed; each kind maps to one status code.
type Kind uint8

const (
	KindBadRequest       Kind = iota // 4xx: a typed *httpio.Error or a normalize rule; status from the error
	KindMethodNotAllowed             // 405: CONNECT
	KindUnavailable                  // 503: tunnel not established
	KindDraining                     // 503: shutting down
	KindUpstream                     // 502: proxying failed (tunnel/origin errors, bad origin response)
	KindUpstreamTimeout              // 504: the origin did not answer in time
	KindNotFound                     // 404: the request names an endpoint the server does not have
	KindForbidden                    // 403: the endpoint's access rules refuse the request
)

// kindNames are snake_case: they are also metric label values.
var kindNames = [...]string{
	KindBadRequest:       "bad_request",
	KindMethodNotAllowed: "method_not_allowed",
	KindUnavailable:      "unavailable",
	KindDraining:         "draining",
	KindUpstream:         "upstream",
	KindUpstreamTimeout:  "upstream_timeout",
	KindNotFound:         "unknown_endpoint",
	KindForbidden:        "forbidden",
}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// status is the status code a kind answers with (KindBadRequest: the
// default when no *httpio.Error says otherwise).
func (k Kind) status() int {
	switch k {
	case KindMethodNotAllowed:
		return http.StatusMethodNotAllowed
	case KindUnavailable, KindDraining:
		return http.StatusServiceUnavailable
	case KindUpstream:
		return http.StatusBadGateway
	case KindUpstreamTimeout:
		return http.StatusGatewayTimeout
	case KindNotFound:
		return http.StatusNotFound
	case KindForbidden:
		return http.StatusForbidden
	}
	return http.StatusBadRequest
}

// Error is why an exchange failed before a response head could be relayed.
// Synthesize turns it into the response the caller gets.
type Error struct {
	Kind   Kind
	Status int // the status code to answer with
	Side   Side
	Msg    string // what went wrong, in the original's words (the Msg* constants)
	// Public is the class of the failure the caller is told after Msg
	// ("origin refused the connection"): never an address or other detail
	// of the far side, which Err carries for the log.
	Public string
	Err    error // the cause, if any
}

// Error returns "Msg: Err" for the log, or "Msg" when there is no cause (or
// just the cause when there is no Msg, or when the cause already starts
// with Msg, as a wrapped ErrTunnelDown does).
func (e *Error) Error() string {
	switch {
	case e.Err == nil:
		return e.Msg
	case e.Msg == "":
		return e.Err.Error()
	}
	cause := e.Err.Error()
	if strings.HasPrefix(cause, e.Msg) {
		return cause
	}
	return e.Msg + ": " + cause
}

func (e *Error) Unwrap() error { return e.Err }

// NewError builds an *Error whose Status follows from kind. For
// KindBadRequest the status comes from an *httpio.Error found in err's
// chain (400, 414, 431, 505 for an HTTP/2 preface, ...) and is 400
// otherwise, or when that status is not a 4xx or 5xx code.
func NewError(kind Kind, side Side, msg string, err error) *Error {
	status := kind.status()
	if kind == KindBadRequest {
		if herr, ok := errors.AsType[*httpio.Error](err); ok && herr.Status >= 400 && herr.Status <= 599 {
			status = herr.Status
		}
	}
	return &Error{Kind: kind, Status: status, Side: side, Msg: msg, Err: err}
}
