package pipeline

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/ptproxy/ptproxy/httpio"
)

// errBodyAborted is what a msgBody returns once the exchange it belongs to
// has ended without it.
var errBodyAborted = errors.New("request body abandoned: exchange ended")

// msgBody adapts the *Chunk/*End messages of one request body to the
// io.ReadCloser that quic-go's http3 client reads from its own goroutine.
//
// Ownership of the input channel passes to that goroutine while the body is
// being sent and comes back to the stage after abort returns: abort
// interrupts a blocked Read and waits for it to leave, so the stage never
// reads the channel concurrently with it.
type msgBody struct {
	ctx     context.Context
	in      <-chan Msg
	trailer http.Header // the request's Trailer map, filled at *End

	abortCh   chan struct{}
	abortOnce sync.Once

	mu   sync.Mutex // held by Read while it waits on in
	cur  *Chunk
	off  int
	end  *End // the *End, once seen
	gone bool // in was closed or ctx ended before *End

	// onBad, when set, is called (from Read) when the caller's body turns
	// out malformed: the exchange is cancelled at once rather than waiting
	// for an answer to a request that can never be complete.
	onBad func()
	// bad is that parse error, readable without mu (Read holds mu while it
	// waits for the next message).
	bad atomic.Pointer[httpio.Error]
	// taken counts the body bytes taken off the channel and ended is set at
	// a clean *End, both readable without mu: the forwarder decides at the
	// response head whether the rest of an unfinished body can be drained.
	taken atomic.Int64
	ended atomic.Bool
}

func newMsgBody(ctx context.Context, in <-chan Msg, trailer http.Header) *msgBody {
	return &msgBody{ctx: ctx, in: in, trailer: trailer, abortCh: make(chan struct{})}
}

func (b *msgBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for {
		if b.cur != nil {
			n := copy(p, b.cur.Data[b.off:])
			b.off += n
			if b.off == len(b.cur.Data) {
				b.cur.Release()
				b.cur, b.off = nil, 0
			}
			return n, nil
		}
		if b.end != nil {
			if b.end.Err != nil {
				return 0, b.end.Err
			}
			return 0, io.EOF
		}
		if b.gone {
			return 0, io.ErrUnexpectedEOF
		}
		select {
		case <-b.abortCh:
			return 0, errBodyAborted
		case <-b.ctx.Done():
			b.gone = true
			return 0, context.Cause(b.ctx)
		case m, ok := <-b.in:
			if !ok {
				b.gone = true
				continue
			}
			switch m := m.(type) {
			case *Chunk:
				if len(m.Data) == 0 {
					m.Release()
					continue
				}
				b.cur = m
				b.taken.Add(int64(len(m.Data)))
			case *End:
				b.end = m
				if m.Err == nil {
					b.ended.Store(true)
				}
				if herr := malformed(m.Err); herr != nil {
					// Set before the error reaches quic-go: whatever the
					// peer answers to the reset stream comes after this.
					b.bad.Store(herr)
					if b.onBad != nil {
						b.onBad()
					}
				}
				if m.Err == nil {
					for _, f := range m.Trailers {
						b.trailer.Add(f.Name, f.Value)
					}
				}
			default:
				// A head or failure inside a body cannot happen with a
				// well-behaved source; treat it as a cut body.
				Release(m)
				b.gone = true
			}
		}
	}
}

// Close is called by http3 when it is done with the body; the stage decides
// separately (abort) when the exchange is over.
func (b *msgBody) Close() error { return nil }

// abort stops any Read in progress and returns whether the whole body up to
// its *End was consumed. After abort the caller owns the input channel again.
func (b *msgBody) abort() (complete bool) {
	b.abortOnce.Do(func() { close(b.abortCh) })
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cur != nil {
		b.cur.Release()
		b.cur = nil
	}
	return b.end != nil && b.end.Err == nil
}

// malformedBody returns the parse error that ended the body, if the caller
// sent a malformed one (nil for a complete body, one still arriving, or one
// cut by I/O). It does not wait.
func (b *msgBody) malformedBody() *httpio.Error {
	if b == nil {
		return nil
	}
	return b.bad.Load()
}

// malformed returns err as a request parse error other than the body
// simply ending early (the caller went away), or nil.
func malformed(err error) *httpio.Error {
	if herr, ok := errors.AsType[*httpio.Error](err); ok && herr.Kind != httpio.ErrUnexpectedEOF {
		return herr
	}
	return nil
}
