package h3

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/ptproxy/ptproxy/httpio"
	"github.com/quic-go/qpack"
)

// Stream is one QUIC stream as the codec sees it.
type Stream interface {
	io.Reader
	io.Writer
	Close() error             // ends the send side (FIN)
	CancelRead(code ErrCode)  // STOP_SENDING
	CancelWrite(code ErrCode) // RESET_STREAM
}

// Head is one decoded (or to-be-encoded) field section.
type Head struct {
	// Request pseudo-fields; Protocol is :protocol (extended CONNECT,
	// RFC 9220). Empty means absent.
	Method, Scheme, Authority, Path, Protocol string
	// Status is the response's :status, 0 in a request.
	Status int
	// Fields are the regular fields in wire order, duplicates kept (two
	// cookie fields stay two fields: joining them is the HTTP/1.1 side's
	// business, RFC 9114 section 4.2.1).
	Fields httpio.Header
	// ContentLength is the value of the content-length field(s), which
	// stay in Fields, or -1 when there is none. The Writer ignores it.
	ContentLength int64
}

// Role says which kind of message a Reader reads.
type Role uint8

const (
	ReadsRequest Role = iota
	ReadsResponse
)

// Limits bound what a Reader accepts.
type Limits struct {
	// MaxFieldSectionSize bounds a header or trailer section as RFC 9114
	// section 4.2.2 measures it: the sum of name length + value length +
	// 32 over all fields, pseudo-fields included. 0 means
	// DefaultMaxFieldSectionSize. It should match the
	// SETTINGS_MAX_FIELD_SECTION_SIZE this side advertises.
	MaxFieldSectionSize uint64
}

// DefaultMaxFieldSectionSize is the field section limit when Limits leaves
// it 0.
const DefaultMaxFieldSectionSize = 64 << 10

// readBufSize holds a typical HEADERS frame whole, so it is decoded in
// place; larger ones go through Reader.hdr.
const readBufSize = 16 << 10

// Reader states. A response goes stHead (any number of 1xx heads) ->
// stBody -> stTrailers (optional) -> stDone; a request skips the 1xx loop.
const (
	stHead     = iota // waiting for the (final) header section
	stBody            // DATA frames, or a trailer HEADERS frame
	stTrailers        // trailers read: only unknown frames may precede FIN
	stDone            // FIN read, io.EOF returned
)

// Reader reads one HTTP/3 message from a request stream. It is not safe
// for concurrent use.
type Reader struct {
	fr    frameReader
	dec   qpack.Decoder
	role  Role
	limit uint64
	state uint8
	// noBody: the caller said the response has no content (HEAD, 204, 304).
	noBody bool
	err    error // sticky

	frameLeft     int64 // payload bytes of the current DATA frame not yet returned
	received      int64 // DATA payload bytes announced so far
	contentLength int64 // of the final head, -1 when absent

	head        Head
	trailers    httpio.Header
	hasTrailers bool
	hdr         []byte // HEADERS payloads larger than fr.buf
}

var readerPool = sync.Pool{New: func() any {
	return &Reader{fr: frameReader{buf: make([]byte, readBufSize)}}
}}

// NewReader returns a Reader, possibly a recycled one, for a message of
// the given role on s.
func NewReader(s Stream, role Role, l Limits) *Reader {
	r := readerPool.Get().(*Reader)
	r.fr.reset(s)
	r.role = role
	r.limit = l.MaxFieldSectionSize
	if r.limit == 0 {
		r.limit = DefaultMaxFieldSectionSize
	}
	r.state = stHead
	r.noBody = false
	r.err = nil
	r.frameLeft, r.received, r.contentLength = 0, 0, -1
	r.hasTrailers = false
	return r
}

// Release returns r to a pool. r, the Heads it returned and its Trailers
// must not be used afterwards (their Fields slices are reused); the field
// strings themselves are never reused and may be kept.
func (r *Reader) Release() {
	clear(r.head.Fields)
	clear(r.trailers)
	r.head = Head{Fields: r.head.Fields[:0]}
	r.trailers = r.trailers[:0]
	r.fr.reset(nil)
	r.err = nil
	if cap(r.hdr) > DefaultMaxFieldSectionSize {
		r.hdr = nil
	}
	readerPool.Put(r)
}

var (
	errHeadDone   = errors.New("h3: ReadHead called after the final head")
	errNoHead     = errors.New("h3: body read before the final head")
	errFrameUnred = errors.New("h3: NextData called with DATA payload left unread")
)

func (r *Reader) fail(err error) error {
	r.err = err
	return err
}

// frameErr turns an error from the frame layer into what the caller sees:
// the stream ending inside a frame is H3_FRAME_ERROR (RFC 9114 section
// 7.1); anything else (a reset stream, a closed connection) passes as is.
func frameErr(err error, what string) error {
	if err == io.ErrUnexpectedEOF {
		return connErr(ErrCodeFrameError, "stream ended inside "+what)
	}
	return err
}

// nextFrame returns the header of the next DATA or HEADERS frame, skipping
// unknown frames (RFC 9114 section 9) and failing on frames that have no
// place on a request stream. io.EOF means a FIN at a frame boundary.
func (r *Reader) nextFrame() (typ, length uint64, err error) {
	for {
		typ, length, err = r.fr.frameHeader()
		if err != nil {
			return 0, 0, frameErr(err, "a frame header")
		}
		switch {
		case typ == frameData || typ == frameHeaders:
			return typ, length, nil
		case typ == framePushPromise:
			// We never send MAX_PUSH_ID, so a client has allowed no push
			// ID (section 7.2.5: H3_ID_ERROR); a client must never send
			// PUSH_PROMISE at all (section 7.2.5: H3_FRAME_UNEXPECTED).
			if r.role == ReadsResponse {
				return 0, 0, connErr(ErrCodeIDError, "PUSH_PROMISE without MAX_PUSH_ID")
			}
			return 0, 0, connErr(ErrCodeFrameUnexpected, "PUSH_PROMISE from a client")
		case typ == frameSettings, typ == frameGoAway, typ == frameMaxPushID, typ == frameCancelPush:
			// Control stream frames (section 7.2).
			return 0, 0, connErr(ErrCodeFrameUnexpected, fmt.Sprintf("frame type %#x on a request stream", typ))
		case isHTTP2Frame(typ):
			return 0, 0, connErr(ErrCodeFrameUnexpected, fmt.Sprintf("HTTP/2 frame type %#x", typ))
		}
		if length > maxSkipFrame {
			return 0, 0, &Error{Code: ErrCodeExcessiveLoad, Reason: fmt.Sprintf("unknown frame of %d bytes", length)}
		}
		if err := r.fr.discard(length); err != nil {
			return 0, 0, frameErr(err, "an unknown frame")
		}
	}
}

// ReadHead returns the next header section. When reading a response it
// may return 1xx interim heads (Status 100-199); call it again for the
// next one, the final head follows. A request has exactly one head.
//
// The Head and its Fields slice belong to r: they are overwritten by the
// next ReadHead and reused after Release.
//
// A malformed section (RFC 9114 section 4.1.2) is an *Error with
// H3_MESSAGE_ERROR, Conn false; see the package documentation for the
// rules. A FIN before the final head is io.ErrUnexpectedEOF, wrapped.
func (r *Reader) ReadHead() (*Head, error) {
	if r.err != nil {
		return nil, r.err
	}
	if r.state != stHead {
		return nil, errHeadDone
	}
	for {
		typ, length, err := r.nextFrame()
		if err == io.EOF {
			return nil, r.fail(fmt.Errorf("h3: stream ended before the header section: %w", io.ErrUnexpectedEOF))
		}
		if err != nil {
			return nil, r.fail(err)
		}
		if typ == frameData {
			return nil, r.fail(connErr(ErrCodeFrameUnexpected, "DATA frame before HEADERS"))
		}
		if err := r.readSection(length, false); err != nil {
			return nil, r.fail(err)
		}
		if r.role == ReadsResponse && r.head.Status < 200 {
			return &r.head, nil
		}
		r.state = stBody
		r.contentLength = r.head.ContentLength
		return &r.head, nil
	}
}

// SetNoBody says the response being read has no content whatever its
// content-length says (a response to HEAD, 204, 304; RFC 9110 section
// 6.4.1): a DATA frame with payload is then a malformed message.
func (r *Reader) SetNoBody() { r.noBody = true }

// FrameLeft is the number of payload bytes of the current DATA frame not
// yet returned by ReadData (0 at a frame boundary).
func (r *Reader) FrameLeft() int64 { return r.frameLeft }

// Trailers returns the trailer section once ReadData or NextData has
// returned io.EOF, or nil when there was none (an empty trailer section
// counts as none). The slice belongs to r, as Head.Fields does.
func (r *Reader) Trailers() httpio.Header {
	if !r.hasTrailers || len(r.trailers) == 0 {
		return nil
	}
	return r.trailers
}

// NextData advances to the next DATA frame, skipping unknown and empty
// ones and reading trailers, and returns its payload length (> 0), or
// io.EOF at the end of the body. It lets a caller learn a frame's size
// before reading it, to forward it as one HTTP/1.1 chunk. The previous
// frame must have been read completely. The length is the peer's claim,
// checked only against content-length: size no buffer by it.
func (r *Reader) NextData() (int64, error) {
	if r.err != nil {
		return 0, r.err
	}
	switch r.state {
	case stHead:
		return 0, errNoHead
	case stDone:
		return 0, io.EOF
	}
	if r.frameLeft > 0 {
		return 0, errFrameUnred
	}
	for {
		typ, length, err := r.nextFrame()
		if err == io.EOF {
			// RFC 9114 section 4.1.2: content-length must match the DATA
			// frames exactly.
			if !r.noBody && r.contentLength >= 0 && r.received != r.contentLength {
				return 0, r.fail(streamErr(fmt.Sprintf("body of %d bytes, content-length %d", r.received, r.contentLength)))
			}
			r.state = stDone
			return 0, io.EOF
		}
		if err != nil {
			return 0, r.fail(err)
		}
		if r.state == stTrailers {
			// Section 4.1: nothing but unknown frames after trailers.
			return 0, r.fail(connErr(ErrCodeFrameUnexpected, "frame after trailers"))
		}
		if typ == frameHeaders {
			if err := r.readSection(length, true); err != nil {
				return 0, r.fail(err)
			}
			r.state = stTrailers
			continue
		}
		if length == 0 {
			continue
		}
		if r.noBody {
			return 0, r.fail(streamErr("DATA in a response without content"))
		}
		if length > uint64(maxVarint-r.received) {
			return 0, r.fail(streamErr("body too long"))
		}
		r.received += int64(length)
		if r.contentLength >= 0 && r.received > r.contentLength {
			return 0, r.fail(streamErr(fmt.Sprintf("more DATA than content-length %d", r.contentLength)))
		}
		r.frameLeft = int64(length)
		return r.frameLeft, nil
	}
}

// ReadData reads body bytes from DATA frames. It never returns bytes of
// two frames in one call: at most FrameLeft bytes, once a frame is
// started. It returns io.EOF at the end of the body (a FIN, after
// trailers if any).
func (r *Reader) ReadData(p []byte) (int, error) {
	if r.frameLeft == 0 {
		if _, err := r.NextData(); err != nil {
			return 0, err
		}
	}
	if len(p) == 0 {
		return 0, nil
	}
	if int64(len(p)) > r.frameLeft {
		p = p[:r.frameLeft]
	}
	n, err := r.fr.read(p)
	if err != nil {
		return 0, r.fail(frameErr(err, "a DATA frame"))
	}
	r.frameLeft -= int64(n)
	return n, nil
}

// maxHeadersPayload bounds the encoded size of a section limited to limit
// decoded. Huffman coding can make a string up to 3.75 times longer
// (30-bit codes for some bytes), and some encoders (quic-go's) always
// Huffman-encode, so a section within the limit may legitimately encode
// larger than it.
func maxHeadersPayload(limit uint64) uint64 { return 4*limit + 64 }

// readSection reads a HEADERS payload of length bytes and decodes it into
// r.head or, for trailers, r.trailers.
func (r *Reader) readSection(length uint64, trailer bool) error {
	if length > maxHeadersPayload(r.limit) {
		return &Error{Code: ErrCodeMessageError, Reason: fmt.Sprintf("HEADERS frame of %d bytes", length), Err: ErrFieldSectionTooLarge}
	}
	n := int(length)
	var p []byte
	if n <= len(r.fr.buf) {
		if err := r.fr.ensure(n); err != nil {
			return frameErr(err, "a HEADERS frame")
		}
		p = r.fr.buf[r.fr.r : r.fr.r+n]
		r.fr.r += n // p stays valid: the buffer is not refilled until decoding is done
	} else {
		// Grow with the data that actually arrives, not with the
		// length the peer claims, so a stalled stream pins little.
		p = r.hdr[:0]
		for len(p) < n {
			if len(p) == cap(p) {
				p = slices.Grow(p, min(n-len(p), max(cap(p), readBufSize)))
			}
			k, err := r.fr.read(p[len(p):min(cap(p), n)])
			if err != nil {
				r.hdr = p[:0]
				return frameErr(err, "a HEADERS frame")
			}
			p = p[:len(p)+k]
		}
		r.hdr = p
	}
	if trailer {
		return r.decodeTrailers(p)
	}
	return r.decodeHead(p)
}

// Pseudo-field bits, to find duplicates without a map.
const (
	pMethod = 1 << iota
	pScheme
	pAuthority
	pPath
	pProtocol
	pStatus
)

// sectionFields decodes a field section field by field, bounding its size
// as RFC 9114 section 4.2.2 measures it (name + value + 32 per field);
// the errors are the section's (QPACK failure, too large), io.EOF at its
// end.
func (r *Reader) sectionFields(p []byte) func() (qpack.HeaderField, error) {
	next := r.dec.Decode(p)
	var size uint64
	return func() (qpack.HeaderField, error) {
		f, err := next()
		if err == io.EOF {
			return f, err
		}
		if err != nil {
			return f, qpackErr(err)
		}
		size += uint64(len(f.Name)) + uint64(len(f.Value)) + 32
		if size > r.limit {
			return f, tooLarge(r.limit)
		}
		return f, nil
	}
}

func qpackErr(err error) *Error {
	return &Error{Code: ErrCodeQPACKDecompressionFailed, Conn: true, Reason: "decoding a field section", Err: err}
}

func tooLarge(limit uint64) *Error {
	return &Error{Code: ErrCodeMessageError, Reason: fmt.Sprintf("field section over %d bytes", limit), Err: ErrFieldSectionTooLarge}
}

// decodeHead decodes and validates a header section (RFC 9114 sections
// 4.2, 4.3). qpack's decoder rejects every dynamic table reference
// (Required Insert Count or Base not 0, post-base or dynamic indices),
// which is right for the capacity 0 we advertise (RFC 9204 section 3.2.3).
func (r *Reader) decodeHead(p []byte) error {
	clear(r.head.Fields)
	h := &r.head
	*h = Head{Fields: h.Fields[:0], ContentLength: -1}
	next := r.sectionFields(p)
	var seen uint
	regular := false
	hosts := 0
	host := ""
	for {
		f, err := next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if len(f.Name) > 0 && f.Name[0] == ':' {
			// Section 4.3: pseudo-fields come first, each at most once,
			// only the defined ones and only for the right message kind.
			if regular {
				return streamErr("pseudo-field " + f.Name + " after regular fields")
			}
			var bit uint
			if r.role == ReadsRequest {
				switch f.Name {
				case ":method":
					bit, h.Method = pMethod, f.Value
				case ":scheme":
					bit, h.Scheme = pScheme, f.Value
				case ":authority":
					bit, h.Authority = pAuthority, f.Value
				case ":path":
					bit, h.Path = pPath, f.Value
				case ":protocol":
					bit, h.Protocol = pProtocol, f.Value
				}
			} else if f.Name == ":status" {
				st, ok := parseStatus(f.Value)
				if !ok {
					return streamErr("invalid :status")
				}
				bit, h.Status = pStatus, st
			}
			if bit == 0 {
				return streamErr("unknown or misplaced pseudo-field " + f.Name)
			}
			if seen&bit != 0 {
				return streamErr("duplicate pseudo-field " + f.Name)
			}
			if f.Value == "" {
				return streamErr("empty pseudo-field " + f.Name)
			}
			seen |= bit
			continue
		}
		regular = true
		if !validName(f.Name) {
			return streamErr("invalid field name")
		}
		if reason := checkRegular(f.Name, f.Value, false); reason != "" {
			return streamErr(reason)
		}
		switch f.Name {
		case "content-length":
			// RFC 9110 section 8.6: repeated values must agree.
			n, ok := parseContentLength(f.Value)
			if !ok {
				return streamErr("invalid content-length")
			}
			if h.ContentLength >= 0 && h.ContentLength != n {
				return streamErr("conflicting content-length fields")
			}
			h.ContentLength = n
		case "host":
			hosts++
			host = f.Value
		}
		h.Fields = append(h.Fields, httpio.Field{Name: f.Name, Value: f.Value})
	}
	if r.role == ReadsResponse {
		if seen&pStatus == 0 {
			return streamErr("response without :status")
		}
		if h.Status == 101 {
			// Section 4.5: HTTP/3 has no Upgrade and no 101; forwarding
			// one to HTTP/1.1 would switch that connection's protocol.
			return streamErr(":status 101")
		}
		return nil
	}
	return checkRequest(h, hosts, host)
}

// checkRequest applies RFC 9114 sections 4.3.1 and 4.4 to a request's
// pseudo-fields.
func checkRequest(h *Head, hosts int, host string) error {
	if h.Method == "" {
		return streamErr("request without :method")
	}
	if !validToken(h.Method) {
		return streamErr("invalid :method")
	}
	if hosts > 1 {
		return streamErr("more than one host field")
	}
	if h.Method == "CONNECT" && h.Protocol == "" {
		// Section 4.4: CONNECT has :authority (host and port) and no
		// :scheme or :path.
		if h.Scheme != "" || h.Path != "" {
			return streamErr("CONNECT with :scheme or :path")
		}
		if h.Authority == "" || !validAuthority(h.Authority, true) {
			return streamErr("CONNECT without a valid :authority")
		}
		return nil
	}
	if h.Protocol != "" {
		// RFC 9220 section 3: :protocol only on CONNECT, which then
		// carries :scheme, :path and :authority like any request.
		if h.Method != "CONNECT" {
			return streamErr(":protocol on a request other than CONNECT")
		}
		if !validToken(h.Protocol) {
			return streamErr("invalid :protocol")
		}
		if h.Authority == "" {
			return streamErr("extended CONNECT without :authority")
		}
	}
	if h.Scheme == "" || h.Path == "" {
		return streamErr("request without :scheme or :path")
	}
	if !validScheme(h.Scheme) {
		return streamErr("invalid :scheme")
	}
	if !validPath(h.Path) {
		return streamErr("invalid :path")
	}
	if !isHTTPScheme(h.Scheme) {
		if h.Authority != "" && !validAuthority(h.Authority, false) {
			return streamErr("invalid :authority")
		}
		return nil
	}
	// Section 4.3.1: an http(s) request has an absolute path or, for
	// OPTIONS, "*"; it names its host in :authority or host, non-empty,
	// the same in both, without userinfo.
	if h.Path[0] != '/' && !(h.Path == "*" && h.Method == "OPTIONS") {
		return streamErr(":path is neither an absolute path nor * for OPTIONS")
	}
	switch {
	case h.Authority == "" && hosts == 0:
		return streamErr("request without :authority or host")
	case h.Authority != "" && !validAuthority(h.Authority, false):
		return streamErr("invalid :authority")
	case hosts == 1 && !validAuthority(host, false):
		return streamErr("invalid host field")
	case hosts == 1 && h.Authority != "" && host != h.Authority:
		return streamErr(":authority and host differ")
	}
	return nil
}

// decodeTrailers decodes and validates a trailer section: regular fields
// only (RFC 9114 section 4.3).
func (r *Reader) decodeTrailers(p []byte) error {
	clear(r.trailers)
	t := r.trailers[:0]
	next := r.sectionFields(p)
	for {
		f, err := next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if len(f.Name) > 0 && f.Name[0] == ':' {
			return streamErr("pseudo-field " + f.Name + " in trailers")
		}
		if !validName(f.Name) {
			return streamErr("invalid field name in trailers")
		}
		if reason := checkRegular(f.Name, f.Value, true); reason != "" {
			return streamErr(reason)
		}
		t = append(t, httpio.Field{Name: f.Name, Value: f.Value})
	}
	r.trailers = t
	r.hasTrailers = true
	return nil
}
