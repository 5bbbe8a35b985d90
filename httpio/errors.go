package httpio

import (
	"fmt"
	"strconv"
)

// ErrorKind names the rule a message broke. Each kind is one rule so that
// callers, logs and tests can tell smuggling attempts apart from plain
// garbage without matching strings.
type ErrorKind uint8

const (
	ErrLineTooLong               ErrorKind = iota + 1 // request/status line over MaxLineBytes (414)
	ErrHeaderTooLarge                                 // field section over MaxHeaderBytes (431)
	ErrTooManyFields                                  // more than MaxHeaderCount field lines (431)
	ErrBadRequestLine                                 // request-line syntax (RFC 9112 3)
	ErrBadStatusLine                                  // status-line syntax (RFC 9112 4)
	ErrBadVersion                                     // HTTP-version syntax (RFC 9112 2.3)
	ErrUnsupportedVersion                             // major version other than 1 (505)
	ErrBadMethod                                      // method is not a token (RFC 9110 9.1)
	ErrBadTarget                                      // request-target (RFC 9112 3.2)
	ErrBadFieldName                                   // field-name not a token / space before colon (RFC 9112 5.1)
	ErrBadFieldValue                                  // CTL, NUL in field-value (RFC 9110 5.5)
	ErrObsFold                                        // obs-fold line folding (RFC 9112 5.2)
	ErrBareCR                                         // CR not followed by LF (RFC 9112 2.2)
	ErrBareLF                                         // LF not preceded by CR (RFC 9112 2.2, ptproxy choice)
	ErrMissingHost                                    // HTTP/1.1 request without Host (RFC 9112 3.2)
	ErrDuplicateHost                                  // more than one Host field (RFC 9112 3.2)
	ErrBadHost                                        // Host is not a valid authority (RFC 9110 7.2)
	ErrBadContentLength                               // Content-Length syntax/conflict (RFC 9112 6.3, RFC 9110 8.6)
	ErrLengthAndChunked                               // both Transfer-Encoding and Content-Length (RFC 9112 6.1)
	ErrUnsupportedTransferCoding                      // TE other than exactly "chunked" (RFC 9112 6.1)
	ErrBadChunk                                       // chunked coding syntax (RFC 9112 7.1)
	ErrTrailer                                        // trailer section (RFC 9112 7.1.2)
	ErrUnexpectedEOF                                  // source ended inside a message
	ErrBodyNotConsumed                                // Read* called before the previous body hit io.EOF
	ErrBadStatus                                      // status code outside 100..999 or 1xx misuse
	ErrUnsupportedResponse                            // e.g. 2xx answer to CONNECT (tunnels are not supported)
	ErrTooManyEmptyLines                              // too many CRLFs before a request-line (RFC 9112 2.2)
)

var kindNames = [...]string{
	ErrLineTooLong:               "line too long",
	ErrHeaderTooLarge:            "header too large",
	ErrTooManyFields:             "too many fields",
	ErrBadRequestLine:            "bad request line",
	ErrBadStatusLine:             "bad status line",
	ErrBadVersion:                "bad version",
	ErrUnsupportedVersion:        "unsupported version",
	ErrBadMethod:                 "bad method",
	ErrBadTarget:                 "bad request-target",
	ErrBadFieldName:              "bad field name",
	ErrBadFieldValue:             "bad field value",
	ErrObsFold:                   "obsolete line folding",
	ErrBareCR:                    "bare CR",
	ErrBareLF:                    "bare LF",
	ErrMissingHost:               "missing Host",
	ErrDuplicateHost:             "duplicate Host",
	ErrBadHost:                   "bad Host",
	ErrBadContentLength:          "bad Content-Length",
	ErrLengthAndChunked:          "Content-Length and Transfer-Encoding together",
	ErrUnsupportedTransferCoding: "unsupported transfer coding",
	ErrBadChunk:                  "bad chunk",
	ErrTrailer:                   "bad trailer",
	ErrUnexpectedEOF:             "unexpected EOF",
	ErrBodyNotConsumed:           "previous body not consumed",
	ErrBadStatus:                 "bad status code",
	ErrUnsupportedResponse:       "unsupported response",
	ErrTooManyEmptyLines:         "too many empty lines",
}

func (k ErrorKind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return "ErrorKind(" + strconv.Itoa(int(k)) + ")"
}

// Error is every parse error the reader returns. After one, the connection
// is out of sync with its peer and must be closed.
type Error struct {
	Kind ErrorKind
	// Status is what a server answers: 400, 414, 431, 505. For responses
	// read from an origin, the pipeline answers 502 whatever Status says.
	Status int
	// Detail names the offending input, %q-quoted and bounded.
	Detail string
}

func (e *Error) Error() string {
	if e.Detail == "" {
		return "httpio: " + e.Kind.String()
	}
	return "httpio: " + e.Kind.String() + ": " + e.Detail
}

// maxExcerpt bounds how much of the offending input an error quotes, so a
// hostile peer cannot make log lines arbitrarily long.
const maxExcerpt = 64

// excerpt returns s bounded to maxExcerpt bytes for quoting with %q.
func excerpt[T ~string | ~[]byte](s T) string {
	if len(s) > maxExcerpt {
		return string(s[:maxExcerpt]) + "..."
	}
	return string(s)
}

func newErr(kind ErrorKind, status int, format string, args ...any) *Error {
	return &Error{Kind: kind, Status: status, Detail: fmt.Sprintf(format, args...)}
}

// bad is a 400 error.
func bad(kind ErrorKind, format string, args ...any) *Error {
	return newErr(kind, 400, format, args...)
}
