package pipeline

import (
	"context"
	"io"

	"github.com/ptproxy/ptproxy/httpio"
)

// pumpBody reads a body into pooled Chunks and sends them on until read
// returns io.EOF or an error, and returns the End that closes it (not yet
// sent: callers decide what else it carries). Each read fills one Chunk, so
// a reader that returns one chunk per call (httpio's chunked reader, an
// HTTP/3 DATA frame) keeps its units. count, when set, sees every chunk's
// size.
func pumpBody(ctx context.Context, out chan<- Msg, read func([]byte) (int, error), trailers func() httpio.Header, count func(int)) *End {
	for {
		c := NewChunk()
		n, err := read(c.Buf())
		if n > 0 {
			c.Data = c.Buf()[:n]
			if count != nil {
				count(n)
			}
			if serr := Send(ctx, out, c); serr != nil {
				return &End{Err: serr}
			}
		} else {
			c.Release()
		}
		if err == io.EOF {
			return &End{Trailers: trailers()}
		}
		if err != nil {
			return &End{Err: err}
		}
	}
}
