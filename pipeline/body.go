package pipeline

import (
	"errors"
	"sync"

	"github.com/ptproxy/ptproxy/httpio"
)

// maxFrameChunk bounds the HTTP/1.1 chunk that crosses the tunnel as one
// DATA frame. A DATA frame is written whole, so a chunk read from a caller
// or an origin is held in memory until its end; a larger chunk (the size
// is the peer's choice, up to 2^60) goes on as several frames of this
// size, so one exchange never holds more. The other direction, DATA frame
// to chunk, streams and keeps boundaries for any size.
const maxFrameChunk = 1 << 20

var bigPool = sync.Pool{New: func() any { b := make([]byte, maxFrameChunk); return &b }}

// pieceReader reads the body of the message an httpio.Reader last read in
// the units that cross the tunnel: for a chunked body one piece per chunk
// (see maxFrameChunk), otherwise one piece per read of at most ChunkSize
// bytes. Buffers are pooled: a piece is valid until the next call, and
// release returns them.
type pieceReader struct {
	r       *httpio.Reader
	chunked bool
	small   *[]byte
	big     *[]byte
}

func newPieceReader(r *httpio.Reader, chunked bool) pieceReader {
	return pieceReader{r: r, chunked: chunked, small: bufPool.Get().(*[]byte)}
}

// next returns the next piece and io.EOF at the end of the body (with no
// data; the trailers are then r.Trailers()). With another error the piece
// is what arrived before it and is not to be forwarded.
func (p *pieceReader) next() ([]byte, error) {
	buf := *p.small
	n, end, err := p.r.ReadBody(buf)
	if !p.chunked || end || err != nil || n < len(buf) {
		return buf[:n], err
	}
	// The chunk goes on beyond the small buffer: the rest of it, up to
	// maxFrameChunk, joins it in a big one.
	if p.big == nil {
		p.big = bigPool.Get().(*[]byte)
	}
	big := *p.big
	copy(big, buf[:n])
	m, _, err := p.r.ReadBody(big[n:])
	return big[:n+m], err
}

func (p *pieceReader) release() {
	if p.small != nil {
		bufPool.Put(p.small)
		p.small = nil
	}
	if p.big != nil {
		bigPool.Put(p.big)
		p.big = nil
	}
}

// malformed returns err as a request parse error other than the body
// simply ending early (the caller went away), or nil.
func malformed(err error) *httpio.Error {
	if herr, ok := errors.AsType[*httpio.Error](err); ok && herr.Kind != httpio.ErrUnexpectedEOF {
		return herr
	}
	return nil
}
