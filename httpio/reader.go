package httpio

import (
	"bytes"
	"io"
)

// Reader reads HTTP/1.1 messages (RFC 9112) from a byte stream: a head with
// ReadRequest or ReadResponse, then its body with ReadBody.
//
// Any *Error leaves the Reader broken (every later call returns the same
// error): after a framing error the stream cannot be resynchronised, and the
// caller must close the connection (RFC 9112 section 9.6 and 11.2).
type Reader struct {
	src io.Reader
	lim Limits

	// buf[r:w] holds bytes read from src and not yet consumed. A head
	// being parsed always starts at buf[r], so compaction (which moves
	// buf[r:w] to the front) keeps head offsets, which are relative to r,
	// valid. buf is nil until the first read and while parked (Park); bp
	// is the pooled buffer buf is, nil when buf grew past it.
	buf  []byte
	bp   *[]byte
	r, w int

	srcErr error // sticky error from src (io.EOF included)
	err    error // sticky *Error: the stream is out of sync

	body     Framing
	bodyDone bool  // ReadBody returned io.EOF (or the message has NoBody)
	remain   int64 // LengthBody: bytes left; ChunkedBody: bytes left in the current chunk
	inChunk  bool  // ChunkedBody: between a chunk-size line and the data's CRLF
	excess   int64 // ChunkedBody: non-data overhead tally, as net/http keeps it
	trailers Header
}

// maxEmptyLines is how many empty lines may precede a request-line.
// RFC 9112 2.2 says a server SHOULD ignore at least one; a few cover
// clients that append CRLF after a POST body, more is a flood.
const maxEmptyLines = 4

// NewReader returns a Reader on src, taken from a pool. Zero fields of lim
// take the defaults. Call Release when the connection is done.
func NewReader(src io.Reader, lim Limits) *Reader {
	r := readerPool.Get().(*Reader)
	if lim.MaxLineBytes <= 0 {
		lim.MaxLineBytes = DefaultMaxLineBytes
	}
	if lim.MaxHeaderBytes <= 0 {
		lim.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if lim.MaxHeaderCount <= 0 {
		lim.MaxHeaderCount = DefaultMaxHeaderCount
	}
	r.lim = lim
	r.Reset(src)
	return r
}

// Reset discards all state, including buffered bytes, and reads from src
// with the same limits.
func (r *Reader) Reset(src io.Reader) {
	r.src = src
	r.r, r.w = 0, 0
	r.srcErr, r.err = nil, nil
	r.body = Framing{}
	r.bodyDone = true
	r.remain, r.inChunk, r.excess = 0, false, 0
	clear(r.trailers)
	r.trailers = r.trailers[:0]
}

// Release returns the Reader and its buffer to the pool. r must not be used
// afterwards.
func (r *Reader) Release() {
	r.Reset(nil)
	r.putBuf()
	if cap(r.trailers) > 64 {
		r.trailers = nil
	}
	readerPool.Put(r)
}

// Park gives the read buffer back to a pool while nothing is buffered, so
// that a connection waiting for its next message holds no read buffer
// (1,000 idle keep-alive callers would otherwise hold 16 MiB); the next
// read takes one again. A buffer that grew for a large head is dropped.
// With bytes buffered (a pipelined request) it does nothing. It saves
// memory only if the caller then waits for src to become readable before
// reading: a read blocks holding the buffer it reads into.
func (r *Reader) Park() {
	if r.r != r.w {
		return
	}
	r.r, r.w = 0, 0
	r.putBuf()
}

// getBuf takes a buffer from the pool unless r has one.
func (r *Reader) getBuf() {
	if r.buf == nil {
		r.bp = readBufPool.Get().(*[]byte)
		r.buf = *r.bp
	}
}

// putBuf gives r's buffer back: the pooled one to the pool, a grown one to
// the garbage collector (a big buffer is not kept pooled).
func (r *Reader) putBuf() {
	if r.bp != nil {
		readBufPool.Put(r.bp)
	}
	r.buf, r.bp = nil, nil
}

// Buffered returns the number of bytes read from src but not consumed yet,
// such as a pipelined next request.
func (r *Reader) Buffered() int { return r.w - r.r }

// Trailers returns the trailer fields of the last chunked body, in order,
// once ReadBody has returned io.EOF. The slice is valid until the next
// ReadRequest or ReadResponse.
func (r *Reader) Trailers() Header { return r.trailers }

// begin checks that the stream is in sync for a new head.
func (r *Reader) begin() error {
	if r.err != nil {
		return r.err
	}
	if !r.bodyDone {
		return r.fail(bad(ErrBodyNotConsumed, "the body of the previous message was not read to the end"))
	}
	clear(r.trailers)
	r.trailers = r.trailers[:0]
	return nil
}

// fail records a parse error so later calls return it too.
func (r *Reader) fail(err error) error {
	if _, ok := err.(*Error); ok {
		r.err = err
	}
	return err
}

// more reads from src into buf, first compacting buf[r:w] to the front or
// growing buf when it is full. It returns src's error (io.EOF included)
// only when no byte was added.
func (r *Reader) more() error {
	if r.srcErr != nil {
		return r.srcErr
	}
	if r.r == r.w {
		r.r, r.w = 0, 0
	}
	r.getBuf()
	if r.w == len(r.buf) {
		if r.r > 0 {
			r.w = copy(r.buf, r.buf[r.r:r.w])
			r.r = 0
		} else {
			// Only a head (bounded by Limits) or trailer section can
			// fill the whole buffer.
			nb := make([]byte, 2*len(r.buf))
			copy(nb, r.buf[:r.w])
			if r.bp != nil {
				// The pooled buffer is not needed any more.
				readBufPool.Put(r.bp)
				r.bp = nil
			}
			r.buf = nb
		}
	}
	for range 100 {
		n, err := r.src.Read(r.buf[r.w:])
		r.w += n
		if err != nil {
			r.srcErr = err
			if n > 0 {
				return nil
			}
			return err
		}
		if n > 0 {
			return nil
		}
	}
	r.srcErr = io.ErrNoProgress
	return r.srcErr
}

// headKind selects the rules scanHead applies to the first line.
type headKind uint8

const (
	requestHead  headKind = iota // request-line first; leading empty lines skipped
	responseHead                 // status-line first
	trailerHead                  // no start line: a trailer section (RFC 9112 7.1.2)
)

// scanHead makes sure a whole head (start line, field lines and the empty
// line) is in buf[r.r:] and returns its length. It enforces, before
// anything is allocated, the line-level rules: CRLF line endings (RFC 9112
// 2.2: a bare LF is rejected; ptproxy is stricter than net/http here), no
// bare CR (RFC 9112 2.2), and the Limits. It consumes leading empty lines
// of a request. io.EOF is returned unwrapped only when src ends before the
// first byte of a request or response.
func (r *Reader) scanHead(kind headKind) (int, error) {
	var (
		off, scan    int // start of the current line; end of the LF search; both relative to r.r
		line0        = kind != trailerHead
		fieldBytes   int
		fieldCount   int
		emptyLines   int
		lineTooLong  = func() error { return r.lineTooLong(kind) }
		maxLine      = r.lim.MaxLineBytes
		maxHeader    = r.lim.MaxHeaderBytes
		maxFieldsCnt = r.lim.MaxHeaderCount
	)
	for {
		i := bytes.IndexByte(r.buf[r.r+scan:r.w], '\n')
		if i < 0 {
			scan = r.w - r.r
			partial := scan - off
			if line0 && partial > maxLine+1 {
				return 0, lineTooLong()
			}
			if !line0 && fieldBytes+partial > maxHeader+1 {
				return 0, tooLarge(kind, maxHeader)
			}
			if err := r.more(); err != nil {
				if err == io.EOF {
					if kind != trailerHead && scan == 0 {
						return 0, io.EOF
					}
					return 0, newErr(ErrUnexpectedEOF, 400, "connection closed inside a %s", kind)
				}
				return 0, err
			}
			continue
		}
		end := scan + i
		scan = end + 1
		line := r.buf[r.r+off : r.r+end]
		if len(line) == 0 || line[len(line)-1] != '\r' {
			return 0, bad(ErrBareLF, "line %q ends in LF without CR", excerpt(line))
		}
		line = line[:len(line)-1]
		if bytes.IndexByte(line, '\r') >= 0 {
			return 0, bad(ErrBareCR, "CR inside line %q", excerpt(line))
		}
		if line0 {
			if len(line) == 0 {
				if kind == responseHead {
					return 0, newErr(ErrBadStatusLine, 502, "empty status-line")
				}
				emptyLines++
				if emptyLines > maxEmptyLines {
					return 0, bad(ErrTooManyEmptyLines, "more than %d empty lines before the request-line", maxEmptyLines)
				}
				r.r += scan
				off, scan = 0, 0
				continue
			}
			if len(line) > maxLine {
				return 0, lineTooLong()
			}
			line0 = false
			off = scan
			continue
		}
		if len(line) == 0 {
			return scan, nil
		}
		fieldBytes += len(line) + 2
		fieldCount++
		if fieldBytes > maxHeader {
			return 0, tooLarge(kind, maxHeader)
		}
		if fieldCount > maxFieldsCnt {
			return 0, newErr(ErrTooManyFields, 431, "more than %d field lines", maxFieldsCnt)
		}
		off = scan
	}
}

func (k headKind) String() string {
	switch k {
	case requestHead:
		return "request head"
	case responseHead:
		return "response head"
	}
	return "trailer section"
}

// lineTooLong is 414 for a request-line (RFC 9112 3), 502 for a status-line.
func (r *Reader) lineTooLong(kind headKind) error {
	if kind == responseHead {
		return newErr(ErrLineTooLong, 502, "status-line longer than %d bytes", r.lim.MaxLineBytes)
	}
	return newErr(ErrLineTooLong, 414, "request-line longer than %d bytes", r.lim.MaxLineBytes)
}

// tooLarge is 431 (RFC 6585 5).
func tooLarge(kind headKind, max int) error {
	return newErr(ErrHeaderTooLarge, 431, "%s fields longer than %d bytes", kind, max)
}

// ReadRequest reads a request head into req, reusing req.Header's backing
// array, and decides the body framing (req.Body). It returns io.EOF,
// unwrapped, when src ends cleanly before the first byte of a request (the
// client closed a keep-alive connection). Errors from src other than EOF
// are returned as they are; every protocol violation is an *Error.
//
// All strings in req except interned constants share one allocation made
// for the head.
func (r *Reader) ReadRequest(req *Request) error {
	if err := r.begin(); err != nil {
		return err
	}
	n, err := r.scanHead(requestHead)
	if err != nil {
		return r.fail(err)
	}
	s := string(r.buf[r.r : r.r+n])
	r.r += n
	if err := parseRequest(s, req); err != nil {
		return r.fail(err)
	}
	r.startBody(req.Body)
	return nil
}

// ReadResponse reads a response head into resp. reqMethod is the method of
// the request it answers: a response to HEAD has no body (RFC 9112 6.3).
// A 1xx interim response (other than 101) is returned as is, with NoBody;
// the caller reads again for the final response. 101 Switching Protocols and
// a 2xx answer to CONNECT are *Error ErrUnsupportedResponse: after them the
// connection no longer carries HTTP/1.1, and ptproxy tunnels neither.
// Like ReadRequest, it returns io.EOF unwrapped when src ends before the
// first byte.
func (r *Reader) ReadResponse(resp *Response, reqMethod string) error {
	return r.readResponse(resp, reqMethod, "")
}

// readResponse is ReadResponse, accepting a 101 to upgrade when it is set
// (see ReadUpgradeResponse).
func (r *Reader) readResponse(resp *Response, reqMethod, upgrade string) error {
	if err := r.begin(); err != nil {
		return err
	}
	n, err := r.scanHead(responseHead)
	if err != nil {
		return r.fail(err)
	}
	s := string(r.buf[r.r : r.r+n])
	r.r += n
	if err := parseResponse(s, resp, reqMethod, upgrade); err != nil {
		return r.fail(err)
	}
	r.startBody(resp.Body)
	return nil
}

func (r *Reader) startBody(f Framing) {
	r.body = f
	r.remain, r.inChunk, r.excess = 0, false, 0
	switch f.Kind {
	case NoBody:
		r.bodyDone = true
	case LengthBody:
		r.remain = f.Length
		r.bodyDone = false
	default:
		r.bodyDone = false
	}
}

// ReadBody reads the body of the message last returned; see the package
// documentation in docs/httpio.md for the units. In short:
//   - ChunkedBody: data of exactly one chunk per call, blocking until the
//     chunk is complete or p is full; chunkEnd is true on the call that
//     finished the chunk. After the last-chunk and the trailer section it
//     returns 0, false, io.EOF and Trailers holds the trailer fields.
//   - LengthBody: what is available, never past the length; 0, io.EOF at
//     the end; a premature end of src is ErrUnexpectedEOF.
//   - UntilCloseBody: what is available; io.EOF when src ends.
//   - NoBody: io.EOF at once.
//
// io.EOF always comes with n == 0. A zero-length p returns 0, false, nil.
func (r *Reader) ReadBody(p []byte) (n int, chunkEnd bool, err error) {
	if r.err != nil {
		return 0, false, r.err
	}
	if r.bodyDone {
		return 0, false, io.EOF
	}
	if len(p) == 0 {
		return 0, false, nil
	}
	switch r.body.Kind {
	case LengthBody:
		if r.remain == 0 {
			r.bodyDone = true
			return 0, false, io.EOF
		}
		if int64(len(p)) > r.remain {
			p = p[:r.remain]
		}
		n, err = r.readSome(p)
		r.remain -= int64(n)
		if err == io.EOF {
			return n, false, r.fail(newErr(ErrUnexpectedEOF, 400, "connection closed with %d body bytes missing", r.remain))
		}
		return n, false, err
	case UntilCloseBody:
		n, err = r.readSome(p)
		if err == io.EOF {
			r.bodyDone = true
		}
		return n, false, err
	case ChunkedBody:
		return r.readChunked(p)
	}
	r.bodyDone = true
	return 0, false, io.EOF
}

// readSome returns buffered bytes, or reads once from src when none are
// buffered (directly into p when p is at least as large as the buffer, to
// save a copy). It returns src's error only with n == 0.
func (r *Reader) readSome(p []byte) (int, error) {
	if r.r == r.w {
		if r.srcErr != nil {
			return 0, r.srcErr
		}
		r.getBuf()
		if len(p) >= len(r.buf) {
			for range 100 {
				n, err := r.src.Read(p)
				if err != nil {
					r.srcErr = err
					if n > 0 {
						return n, nil
					}
					return 0, err
				}
				if n > 0 {
					return n, nil
				}
			}
			r.srcErr = io.ErrNoProgress
			return 0, r.srcErr
		}
		if err := r.more(); err != nil {
			return 0, err
		}
	}
	n := copy(p, r.buf[r.r:r.w])
	r.r += n
	return n, nil
}
