package pipeline

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ptproxy/ptproxy/httpio"
	"github.com/ptproxy/ptproxy/httpio/h3"
)

// clientExchange carries one request through the tunnel and its response
// back to the caller, on the connection's goroutine. A request body is
// sent by the exchange's one other goroutine (clientUpload), which is
// joined before the exchange returns.
type clientExchange struct {
	c      *clientConn
	h      *Head
	ctx    context.Context // ends with the exchange; bounds Tunnel.Open
	cancel context.CancelCauseFunc

	// hasBody is set for a request with a body to send (the upload runs).
	hasBody bool
	up      clientUpload

	// mu guards ts and aborted, which abort (any goroutine) reads.
	mu      sync.Mutex
	ts      TunnelStream // once Open returned
	aborted error        // why abort ran, once it did
}

// errSwitchingOverTunnel is a 101 from the tunnel: HTTP/3 has no protocol
// switch (RFC 9114 4.5), and the caller would take it for one.
var errSwitchingOverTunnel = errors.New("101 (Switching Protocols) from the tunnel")

// abort cancels the exchange from any goroutine: its context ends and its
// stream, if open, is reset both ways (the server stops the origin
// exchange). The first cause is kept.
func (x *clientExchange) abort(cause error) {
	x.mu.Lock()
	if x.cancel == nil {
		// No exchange in flight.
		x.mu.Unlock()
		return
	}
	if x.aborted == nil {
		x.aborted = cause
	}
	ts, cancel := x.ts, x.cancel
	x.mu.Unlock()
	cancel(cause)
	if ts != nil {
		ts.Cancel()
	}
}

// setStream records the stream Open returned; false means the exchange
// was aborted meanwhile.
func (x *clientExchange) setStream(ts TunnelStream) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.aborted != nil {
		return false
	}
	x.ts = ts
	return true
}

// abortedBy returns the cause abort ran with, or nil.
func (x *clientExchange) abortedBy() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.aborted
}

// run carries h, a normalized request head, through the tunnel and the
// response back, and reports whether the connection can carry another
// request. err is the reason the connection ends, for the caller of
// ServeClientConn.
func (x *clientExchange) run(h *Head) (keep bool, err error) {
	c := x.c
	ctx, cancel := context.WithCancelCause(c.ctx)
	x.mu.Lock()
	x.h, x.ctx, x.cancel, x.ts, x.aborted = h, ctx, cancel, nil, nil
	x.mu.Unlock()
	defer func() {
		x.mu.Lock()
		x.cancel, x.ts, x.h = nil, nil, nil
		x.mu.Unlock()
		cancel(nil)
	}()
	// A body of length 0 is sent as "content-length: 0" and FIN, like a
	// request without a body.
	x.hasBody = h.Body.Kind == httpio.ChunkedBody || h.Body.Kind == httpio.LengthBody && h.Body.Length > 0

	// While the exchange waits for the session and the response, a caller
	// that hangs up cancels it. The watch costs nothing (no goroutine)
	// unless the exchange takes longer than hangupDelay.
	// After a request that closes the connection, what the caller still
	// sends is read and discarded by the watch (it proves nothing); before
	// a body is sent it must not be touched.
	c.watch.arm(x, h.Close && !x.hasBody)
	c.sink.beforeRead()
	// An upgrade's stream stays open: it carries the new protocol.
	ts, oerr := c.o.Tunnel.Open(ctx, RequestH3Head(h), !x.hasBody && h.Upgrade == "")
	if werr := c.sink.afterRead(); werr != nil && oerr == nil {
		ts.Close()
		x.endWatch()
		return false, nil
	}
	if oerr != nil {
		x.endWatch()
		if errors.Is(x.abortedBy(), errCallerGone) {
			c.gone = true
			return false, nil
		}
		c.sink.fail(tunnelError(oerr, !x.hasBody), h.ex)
		return false, nil
	}
	defer ts.Close()
	if !x.setStream(ts) {
		// Aborted while Open ran: the caller is gone, or ctx ended.
		x.endWatch()
		c.gone = errors.Is(x.abortedBy(), errCallerGone)
		return false, nil
	}
	if x.hasBody {
		// From now on the body goroutine reads the connection; it watches
		// for the hang-up itself once the body is sent.
		x.endWatch()
		x.up.start(x)
	}
	keep, err = x.relay(ts)
	if x.hasBody {
		if x.up.running {
			x.stopUpload(false)
		}
	} else {
		x.endWatch()
	}
	if errors.Is(x.abortedBy(), errCallerGone) {
		c.gone = true
		return false, err
	}
	return keep, err
}

// endWatch stops the hang-up watch of a bodiless exchange (a watch
// goroutine, if the timer started one, is joined) and gives the read
// deadline back.
func (x *clientExchange) endWatch() {
	if x.c.watch.stop() {
		x.c.setReadDeadline(time.Time{})
	}
}

// relay reads the response off the stream and writes it to the caller.
func (x *clientExchange) relay(ts TunnelStream) (keep bool, err error) {
	c, h, s := x.c, x.h, &x.c.sink
	continued := false // a 100 (Continue) was relayed to the caller
	var fh *h3.Head
	for {
		s.beforeRead()
		rh, rerr := ts.ReadHead()
		if werr := s.afterRead(); werr != nil {
			x.abort(werr)
			return false, nil
		}
		if rerr == nil && rh.Status == http.StatusSwitchingProtocols {
			rerr = errSwitchingOverTunnel
		}
		if rerr != nil {
			return false, x.failed(rerr)
		}
		if rh.Status >= 200 {
			fh = rh
			break
		}
		if rh.Status == http.StatusContinue {
			continued = true
		}
		if werr := s.interim(&Head{Status: rh.Status, Header: RemoveHopByHop(rh.Fields), Major: h.Major, Minor: h.Minor}); werr != nil {
			x.abort(werr)
			return false, nil
		}
	}
	if h.Upgrade != "" {
		if fh.Status/100 == 2 {
			return false, x.switchProtocols(ts, fh)
		}
		// Refused (the origin answered without switching): an ordinary
		// response, and the stream's request side ends here.
		ts.CloseWrite(nil)
	}
	if x.hasBody && x.up.bad.Load() != nil {
		// The answer raced the cancellation of a malformed body: it is
		// the server's reaction to the reset stream, not the origin's to
		// the request.
		return false, x.failed(errMalformedBody)
	}
	rh := HeadFromH3Response(fh, h.Method)
	rh.Major, rh.Minor, rh.Close, rh.ex = h.Major, h.Minor, h.Close, h.ex
	if rh.Body.Kind == httpio.NoBody {
		ts.SetNoBody()
	}
	drainRest := false
	if x.hasBody && !x.up.ended.Load() && !rh.Close {
		// An early response: the answer came before the whole request
		// body. The head must say now whether the connection survives.
		drainRest = canDrainRest(h, rh.Status, x.up.taken.Load(), continued)
		rh.Close = !drainRest
	}
	if werr := s.head(rh); werr != nil {
		if errors.Is(werr, errCallerWrite) {
			x.abort(werr)
			return false, nil
		}
		// The head is not valid HTTP/1.1 (nothing was written).
		c.sink.fail(NewError(KindUpstream, ClientSide, MsgReceivingResponse, werr), h.ex)
		return false, nil
	}
	if cut := s.body(ts); cut != nil {
		if errors.Is(cut, errCallerWrite) {
			x.abort(cut)
		}
		return false, nil
	}
	complete := true
	if x.hasBody {
		if x.up.busy() {
			// The caller has its whole answer before the exchange waits
			// for the rest of its body.
			if werr := s.w.Flush(); werr != nil {
				return false, nil
			}
		}
		complete = x.stopUpload(drainRest)
	}
	return complete && !s.closeConn, nil
}

// errMalformedBody stands for the parse error the upload met.
var errMalformedBody = errors.New("malformed request body")

// failed answers an exchange whose response head could not be had
// through the tunnel. It returns the reason the connection ends.
func (x *clientExchange) failed(err error) error {
	c := x.c
	if x.hasBody {
		// Its result tells a malformed body (400) from a tunnel failure.
		x.stopUpload(false)
	}
	if x.hasBody {
		if herr := x.up.bad.Load(); herr != nil {
			// The caller's body was malformed (a bad chunk, a forbidden
			// trailer): its request is refused like a bad head, 4xx and
			// close; the stream was cancelled, so the origin never got a
			// complete request.
			c.sink.fail(NewError(KindBadRequest, ClientSide, MsgBadRequest, herr), x.h.ex)
			return nil
		}
	}
	if cause := x.abortedBy(); cause != nil {
		// The caller went away (nobody to answer), or the connection is
		// being torn down.
		return nil
	}
	c.sink.fail(tunnelError(err, !x.hasBody || x.up.sent.Load()), x.h.ex)
	return nil
}

// stopUpload ends the upload and joins it, and reports whether the request
// body was read to its end. With drain, the rest of a body still arriving
// is read and discarded, within maxDrainBytes and maxDrainWait (the
// connection survives that); otherwise reading stops at once.
func (x *clientExchange) stopUpload(drain bool) bool {
	u, c := &x.up, x.c
	if !u.running {
		return u.ended.Load()
	}
	u.running = false
	if u.ended.Load() {
		// The body was read whole: the upload is only ending the stream's
		// request side (trailers, FIN), which must not be cut.
		waitBriefly(u.bodyDone, finishGrace)
	}
	if u.busy() {
		// The stream wants no more of the body: a write blocked on flow
		// control returns, and what still arrives is read and discarded.
		u.discard.Store(true)
		x.mu.Lock()
		ts := x.ts
		x.mu.Unlock()
		if ts != nil {
			ts.Cancel()
		}
		if drain {
			c.setReadDeadline(time.Now().Add(maxDrainWait))
		} else {
			c.setReadDeadline(time.Unix(1, 0))
		}
		<-u.bodyDone
	}
	// Now only a hang-up watch may be reading.
	c.conn.SetReadDeadline(time.Unix(1, 0))
	<-u.done
	c.setReadDeadline(time.Time{})
	return u.ended.Load()
}

// finishGrace bounds the wait for an upload or a download that has
// taken its whole body and is only writing its end, before it is cut.
const finishGrace = time.Second

// waitBriefly waits for ch to be closed, at most d, and reports whether
// it was.
func waitBriefly(ch <-chan struct{}, d time.Duration) bool {
	select {
	case <-ch:
		return true
	default:
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
		return false
	}
}

// maxDrainBytes bounds the rest of a request body read and discarded after
// an early response to keep the caller's connection (net/http's server
// reads up to the same 256 KiB).
const maxDrainBytes = 256 << 10

// maxDrainWait bounds the wait for that rest: a caller that promised a body
// and stops sending it loses the connection after its complete response.
const maxDrainWait = 10 * time.Second

// canDrainRest reports, when a response head comes before the whole request
// body, whether the connection can be expected to stay usable, so the head
// need not announce Connection: close. Not when the caller waits for a 100
// (Continue) it never got (RFC 9110 10.1.1: it may never send the body).
// A refusal (4xx/5xx) means the origin has stopped taking the body: the rest
// is read and discarded here only if its length is known and within
// maxDrainBytes. Any other status is taken for a full-duplex exchange (an
// echo, a streaming transform) whose body still flows to the origin and is
// normally complete when the response ends. Whatever is left at the end is
// drained within the same bounds (stopUpload); if that fails the
// connection closes without notice, which a caller still sending its
// body cannot mistake for a reusable connection.
func canDrainRest(h *Head, status int, taken int64, continued bool) bool {
	if httpio.HasToken(h.Header.Get("Expect"), "100-continue") && !continued {
		return false
	}
	if status < 400 {
		return true
	}
	return h.Body.Kind == httpio.LengthBody && h.Body.Length-taken <= maxDrainBytes
}

// clientUpload sends a request body: it reads the caller's body with the
// connection's httpio.Reader and writes one DATA frame per chunk (one per
// read for a Content-Length body), then the trailers and FIN. Once the
// body is sent it watches the connection for a hang-up until the exchange
// stops it. It races the response, which the exchange reads meanwhile.
type clientUpload struct {
	running  bool          // started and not yet joined (exchange only)
	bodyDone chan struct{} // closed when the body is over (sent, failed or given up)
	done     chan struct{} // closed when the goroutine returns

	// Written by the upload, read by the exchange at any time.
	taken   atomic.Int64                 // body bytes read from the caller
	ended   atomic.Bool                  // the body was read to its end
	sent    atomic.Bool                  // ... and sent whole, with FIN
	bad     atomic.Pointer[httpio.Error] // the body was malformed
	discard atomic.Bool                  // written by the exchange: send no more, read and discard
}

func (u *clientUpload) start(x *clientExchange) {
	u.taken.Store(0)
	u.ended.Store(false)
	u.sent.Store(false)
	u.bad.Store(nil)
	u.discard.Store(false)
	u.bodyDone, u.done = make(chan struct{}), make(chan struct{})
	u.running = true
	c, h, ts := x.c, x.h, x.ts
	go func() {
		defer close(u.done)
		u.send(c.r, ts, h.Body.Kind == httpio.ChunkedBody, h.ex, x.abort)
		close(u.bodyDone)
		if u.ended.Load() && !u.discard.Load() {
			c.watch.watch(x, h.Close)
		}
	}()
}

// busy reports whether the body is still being read or sent.
func (u *clientUpload) busy() bool {
	select {
	case <-u.bodyDone:
		return false
	default:
		return true
	}
}

// send reads the body off r and sends it on ts, up to the end of the body
// or an error. A body the stream no longer takes (the server stopped
// reading after an early answer; discard set by the exchange) is read and
// discarded, at most maxDrainBytes more of it. A malformed body or a
// caller gone mid-body aborts the exchange.
func (u *clientUpload) send(r *httpio.Reader, ts TunnelStream, chunked bool, ex *exchange, abort func(error)) {
	pr := newPieceReader(r, chunked)
	defer pr.release()
	writing := true
	var discarded int64
	for {
		p, err := pr.next()
		if err != nil && err != io.EOF {
			if herr := malformed(err); herr != nil {
				// Set before the cancellation: whatever the exchange reads
				// after it comes after this.
				u.bad.Store(herr)
				abort(errMalformedBody)
			} else if callerGone(err) {
				abort(errCallerGone)
			}
			// Otherwise a deadline: the exchange stopped the upload.
			return
		}
		if n := len(p); n > 0 {
			u.taken.Add(int64(n))
			ex.addRequest(n)
			if writing && !u.discard.Load() {
				if ts.WriteData(p) != nil {
					writing = false
				}
			} else {
				writing = false
			}
			if !writing {
				if discarded += int64(n); discarded > maxDrainBytes {
					return
				}
			}
		}
		if err == io.EOF {
			u.ended.Store(true)
			if writing && !u.discard.Load() && ts.CloseWrite(forwardTrailers(r.Trailers())) == nil {
				u.sent.Store(true)
			}
			return
		}
	}
}
