package httpio

import (
	"bytes"
	"io"
)

// Chunked transfer coding (RFC 9112 7.1), decoded one chunk per unit so
// that chunk boundaries can be forwarded as they came.

// maxChunkLine bounds a chunk-size line with its extensions, CRLF excluded.
// net/http's limit is 4095; staying under it keeps ptproxy at least as
// strict.
const maxChunkLine = 4094

// maxChunkSizeDigits: 15 hex digits are at most 2^60-1, so a size never
// overflows int64 and 16 digits of leading zeros (which net/http still
// accepts) are not needed by anyone.
const maxChunkSizeDigits = 15

// readChunked implements ReadBody for ChunkedBody.
func (r *Reader) readChunked(p []byte) (n int, chunkEnd bool, err error) {
	if !r.inChunk {
		size, err := r.readChunkHeader()
		if err != nil {
			return 0, false, r.fail(err)
		}
		if size == 0 {
			if err := r.readTrailers(); err != nil {
				return 0, false, r.fail(err)
			}
			r.bodyDone = true
			return 0, false, io.EOF
		}
		r.remain, r.inChunk = size, true
	}
	// Like io.ReadFull: fill p or finish the chunk.
	for n < len(p) && r.remain > 0 {
		q := p[n:]
		if int64(len(q)) > r.remain {
			q = q[:r.remain]
		}
		m, err := r.readSome(q)
		n += m
		r.remain -= int64(m)
		if err != nil {
			if err == io.EOF {
				err = newErr(ErrUnexpectedEOF, 400, "connection closed inside a chunk, %d bytes missing", r.remain)
			}
			return n, false, r.fail(err)
		}
	}
	if r.remain > 0 {
		return n, false, nil
	}
	// RFC 9112 7.1: chunk-data is followed by exactly CRLF.
	for r.w-r.r < 2 {
		if err := r.more(); err != nil {
			if err == io.EOF {
				err = newErr(ErrUnexpectedEOF, 400, "connection closed after chunk data")
			}
			return n, false, r.fail(err)
		}
	}
	if r.buf[r.r] != '\r' || r.buf[r.r+1] != '\n' {
		return n, false, r.fail(bad(ErrBadChunk, "chunk data followed by %q instead of CRLF", r.buf[r.r:r.r+2]))
	}
	r.r += 2
	r.inChunk = false
	return n, true, nil
}

// readChunkHeader reads and consumes one chunk-size line:
// chunk-size [ chunk-ext ] CRLF (RFC 9112 7.1, 7.1.1).
func (r *Reader) readChunkHeader() (int64, error) {
	scan := 0
	var line []byte
	for {
		i := bytes.IndexByte(r.buf[r.r+scan:r.w], '\n')
		if i >= 0 {
			line = r.buf[r.r : r.r+scan+i]
			break
		}
		scan = r.w - r.r
		if scan > maxChunkLine+1 {
			return 0, bad(ErrBadChunk, "chunk-size line longer than %d bytes", maxChunkLine)
		}
		if err := r.more(); err != nil {
			if err == io.EOF {
				return 0, newErr(ErrUnexpectedEOF, 400, "connection closed in a chunk-size line")
			}
			return 0, err
		}
	}
	consumed := len(line) + 1
	if len(line) == 0 || line[len(line)-1] != '\r' {
		return 0, bad(ErrBareLF, "chunk-size line %q ends in LF without CR", excerpt(line))
	}
	line = line[:len(line)-1]
	if bytes.IndexByte(line, '\r') >= 0 {
		return 0, bad(ErrBareCR, "CR inside chunk-size line %q", excerpt(line))
	}
	if len(line) > maxChunkLine {
		return 0, bad(ErrBadChunk, "chunk-size line longer than %d bytes", maxChunkLine)
	}
	size, err := parseChunkLine(line)
	if err != nil {
		return 0, err
	}
	r.r += consumed
	// Overhead accounting copied from net/http: 16 bytes of overhead per
	// chunk plus twice the chunk's data are free; beyond that, at most
	// 16 KiB of extension bytes in total, so a sender cannot make us parse
	// megabytes of extensions for one byte of data.
	r.excess += int64(len(line)) + 2 + 2
	r.excess -= 16 + 2*size
	r.excess = max(r.excess, 0)
	if r.excess > 16<<10 {
		return 0, bad(ErrBadChunk, "chunked body has too much non-data overhead (chunk extensions)")
	}
	return size, nil
}

// parseChunkLine parses chunk-size [ chunk-ext ] with:
//
//	chunk-size = 1*HEXDIG
//	chunk-ext  = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
//	chunk-ext-name = token
//	chunk-ext-val  = token / quoted-string
//
// Extensions are validated and dropped (RFC 9112 7.1.1 lets a recipient
// ignore unrecognised ones). Anything else after the size ("0x10", "1 0",
// "+10", trailing whitespace) is an error.
func parseChunkLine(line []byte) (int64, *Error) {
	var size int64
	i := 0
	for ; i < len(line) && isHex(line[i]); i++ {
		if i == maxChunkSizeDigits {
			return 0, bad(ErrBadChunk, "chunk-size %q has more than %d hex digits", excerpt(line), maxChunkSizeDigits)
		}
		size = size<<4 | int64(unhex(line[i]))
	}
	if i == 0 {
		return 0, bad(ErrBadChunk, "chunk-size line %q does not start with a hex digit", excerpt(line))
	}
	// RFC 9112 7.1.1 allows BWS before the first ";", but net/http
	// rejects it ("5 ;x"), and ptproxy is never more lenient than net/http.
	if i < len(line) && line[i] != ';' {
		return 0, bad(ErrBadChunk, "junk %q after chunk-size", excerpt(line[i:]))
	}
	for i < len(line) {
		ws := i
		i = skipBWS(line, i)
		if i == len(line) {
			return 0, bad(ErrBadChunk, "trailing whitespace in chunk-size line %q", excerpt(line[ws:]))
		}
		if line[i] != ';' {
			return 0, bad(ErrBadChunk, "junk %q after chunk-size", excerpt(line[ws:]))
		}
		i = skipBWS(line, i+1)
		start := i
		for i < len(line) && isTokenChar(line[i]) {
			i++
		}
		if i == start {
			return 0, bad(ErrBadChunk, "empty chunk-ext-name in %q", excerpt(line[ws:]))
		}
		j := skipBWS(line, i)
		if j == len(line) || line[j] != '=' {
			continue // no value; BWS (if any) must precede another ";"
		}
		i = skipBWS(line, j+1)
		if i < len(line) && line[i] == '"' {
			end, ok := quotedString(line, i)
			if !ok {
				return 0, bad(ErrBadChunk, "bad quoted-string in chunk extension %q", excerpt(line[ws:]))
			}
			i = end
			continue
		}
		start = i
		for i < len(line) && isTokenChar(line[i]) {
			i++
		}
		if i == start {
			return 0, bad(ErrBadChunk, "empty chunk-ext-val in %q", excerpt(line[ws:]))
		}
	}
	return size, nil
}

func skipBWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
		i++
	}
	return i
}

// quotedString scans a quoted-string (RFC 9110 5.6.4) starting at the
// DQUOTE at b[i] and returns the index after the closing DQUOTE.
func quotedString(b []byte, i int) (int, bool) {
	for i++; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return i + 1, true
		case c == '\\':
			// quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
			i++
			if i == len(b) || !isValueChar(b[i]) {
				return 0, false
			}
		case !isValueChar(c):
			// qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
			return 0, false
		}
	}
	return 0, false
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// readTrailers reads the trailer section after the last-chunk
// (RFC 9112 7.1.2) with the same rules and Limits as a head, plus
// forbiddenTrailer.
func (r *Reader) readTrailers() error {
	// The common case, no trailers: avoid the string allocation.
	for r.w-r.r < 2 {
		if err := r.more(); err != nil {
			if err != io.EOF {
				return err
			}
			break // scanHead reports it, or a bare LF first
		}
	}
	if r.w-r.r >= 2 && r.buf[r.r] == '\r' && r.buf[r.r+1] == '\n' {
		r.r += 2
		return nil
	}
	n, err := r.scanHead(trailerHead)
	if err != nil {
		return err
	}
	s := string(r.buf[r.r : r.r+n])
	r.r += n
	h, perr := parseFields(s, r.trailers[:0], true)
	r.trailers = h
	if perr != nil {
		return perr
	}
	return nil
}
