package httpio

// Field is one header or trailer field line.
//
// Name keeps the spelling that arrived on the wire; Value has leading and
// trailing whitespace removed (RFC 9112 section 5.1).
type Field struct {
	Name  string
	Value string
}

// Header is an ordered list of fields. Duplicates keep their relative order;
// lookups are ASCII case-insensitive.
type Header []Field

// TargetForm is the form of a request-target (RFC 9112 section 3.2).
type TargetForm uint8

const (
	OriginForm    TargetForm = iota // "/path?query"
	AbsoluteForm                    // "http://host/path?query"
	AuthorityForm                   // "host:port", CONNECT only
	AsteriskForm                    // "*", OPTIONS only
)

// BodyKind is how the length of a message body is determined
// (RFC 9112 section 6.3).
type BodyKind uint8

const (
	NoBody         BodyKind = iota // no body at all
	LengthBody                     // Content-Length bytes
	ChunkedBody                    // chunked transfer coding, trailers possible
	UntilCloseBody                 // responses only: read until the connection closes
)

// Framing says how the body that follows a head is delimited.
type Framing struct {
	Kind   BodyKind
	Length int64 // valid when Kind == LengthBody
}

// Request is a parsed request head.
type Request struct {
	Method string
	// Target is the request-target exactly as received.
	Target string
	Form   TargetForm
	// Major and Minor are the HTTP version numbers (always 1 and 0 or 1
	// after a successful read).
	Major, Minor int
	Header       Header
	// Host is the authority the request is directed at: the authority of an
	// absolute-form target when there is one (RFC 9112 section 3.2.2: it
	// replaces Host), else the Host field value; empty only for HTTP/1.0
	// requests without Host and for an empty Host field (which RFC 9112
	// section 3.2 allows when the target URI has no authority). For
	// authority-form (CONNECT) it is the target.
	Host string
	// Path is the origin-form of the target: path and query for origin and
	// absolute form ("/" when an absolute target has an empty path), "*" for
	// asterisk form, the authority for authority form.
	Path string
	// Scheme is "http" or "https" for absolute-form targets, else empty.
	Scheme string
	Body   Framing
}

// Response is a parsed response head.
type Response struct {
	Major, Minor int
	Status       int
	// Reason is the reason phrase as received (may be empty).
	Reason string
	Header Header
	Body   Framing
}

// Limits bound what the reader accepts. A zero field means the default.
type Limits struct {
	// MaxLineBytes bounds the request line or status line, CRLF excluded.
	// Exceeding it is 414 URI Too Long for requests. Default 8192.
	MaxLineBytes int
	// MaxHeaderBytes bounds all field lines of a head (or of a trailer
	// section) together, CRLFs included. Exceeding it is 431. Default 65536.
	MaxHeaderBytes int
	// MaxHeaderCount bounds the number of field lines. Exceeding it is 431.
	// Default 100.
	MaxHeaderCount int
}

// Default limits, as documented on Limits.
const (
	DefaultMaxLineBytes   = 8 << 10
	DefaultMaxHeaderBytes = 64 << 10
	DefaultMaxHeaderCount = 100
)

// NameCase selects how the writer spells field names.
type NameCase uint8

const (
	// TitleCase writes canonical names such as "Content-Type", as ptproxy does.
	TitleCase NameCase = iota
	// AsReceived writes names exactly as Field.Name holds them.
	AsReceived
)
