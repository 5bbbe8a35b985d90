package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ptproxy/ptproxy/httpio"
	"github.com/ptproxy/ptproxy/httpio/h3"
	"github.com/quic-go/quic-go"
)

// Exchange is one request stream of the client: the request head was sent
// by Open; the caller streams the body (WriteData, CloseWrite) and reads
// the response (ReadHead, NextData, ReadData), then calls Close exactly once.
//
// The request side may run on one goroutine while the response side runs on
// another; Cancel may be called from any goroutine. Close must come after
// the request side's goroutine stopped using the exchange.
//
// The exchange holds an in-flight slot (Client.InFlight, Drain waits for
// it) from Open until Close.
type Exchange struct {
	c        *Client
	ctx      context.Context
	head     *h3.Head
	bodiless bool
	wait     sessionWait

	early *earlySession // the 0-RTT session the stream rides, until the handshake confirmed it
	conn  *quic.Conn
	sess  *clientSession // nil on an early session
	str   *quic.Stream
	w     *h3.Writer
	r     *h3.Reader
	stop  func() bool // unregisters the cancellation on ctx

	tries   int
	lostErr error // the request may have been processed: a failed resend reports this

	gotHead    bool        // a head (interim or final) was returned: no resend any more
	resendable bool        // ReadHead failed and the request may be sent through another client
	respDone   bool        // the response was read to its end
	wroteDone  atomic.Bool // the request side ended (bodiless, or CloseWrite)
	cancelled  atomic.Bool
	cancelMu   sync.Mutex // orders Cancel against a resend replacing str
	closed     bool
}

// Open sends a request head over the current session and returns its
// exchange; bodiless ends the request with the head (HEADERS, then FIN).
//
// With no usable session (none yet, the attempt in progress, or the
// current one going away after the server's GOAWAY) it waits for the next
// one, at most ClientOptions.SessionWait in total, then returns a
// [*NotReadyError] (errors.Is ErrNotReady); with SessionWait 0 it returns
// that at once. The wait ends early with ErrDraining when Drain is called
// or Run stops, and with ctx's error when the caller gives up. A bodiless
// GET/HEAD may ride an attempt in progress as 0-RTT early data
// (ClientOptions.ZeroRTT, Early0RTT).
//
// A request the server never processed (refused after its GOAWAY, 0-RTT
// rejected, no stream opened) is sent again on the next session, and so is
// an idempotent bodiless request whose connection died before any response
// (at most maxRetries times, within the same wait budget); ReadHead does
// that. A refused request that cannot be sent again (its body was streamed)
// is answered like a request without a session (NotReadyError, 503); a
// request lost with its connection that cannot be sent again keeps that
// error (the server may have processed it: a gateway error, 502).
func (c *Client) Open(ctx context.Context, head *h3.Head, bodiless bool) (*Exchange, error) {
	return c.open(ctx, head, bodiless, c.o.SessionWait)
}

// OpenNoWait is Open for a caller that has other servers to turn to: the
// exchange never waits for a session of this client. With none usable
// Open's NotReadyError comes at once; a request that must be sent again
// (see Open) is sent again here only while this client has a usable
// session, and otherwise ReadHead fails with Resendable true, so the
// caller can send it through another client.
func (c *Client) OpenNoWait(ctx context.Context, head *h3.Head, bodiless bool) (*Exchange, error) {
	return c.open(ctx, head, bodiless, 0)
}

func (c *Client) open(ctx context.Context, head *h3.Head, bodiless bool, wait time.Duration) (*Exchange, error) {
	c.mu.Lock()
	draining := c.draining
	c.mu.Unlock()
	if draining {
		return nil, ErrDraining
	}
	x := &Exchange{c: c, ctx: ctx, head: head, bodiless: bodiless,
		wait: sessionWait{c: c, ctx: ctx, budget: wait}}
	if bodiless {
		x.wroteDone.Store(true)
	}
	if err := x.start(); err != nil {
		x.wait.stop()
		return nil, err
	}
	return x, nil
}

// start acquires a session, opens a stream on it and sends the head,
// trying again on the next session while nothing was sent.
func (x *Exchange) start() error {
	mayEarly := x.c.o.ZeroRTT && Early0RTT(x.head, x.bodiless)
	for {
		s, e, err := x.c.acquire(&x.wait, mayEarly)
		if err != nil {
			if x.lostErr != nil && x.ctx.Err() == nil {
				return x.lostErr
			}
			return err
		}
		if e != nil {
			mayEarly = false // an early session is ridden at most once
		}
		err = x.send(s, e)
		if err == nil {
			return nil
		}
		x.c.release()
		if x.ctx.Err() != nil {
			return x.ctx.Err()
		}
		if errors.Is(err, h3.ErrFieldSectionTooLarge) {
			// Over the server's limit: no session would take it.
			return err
		}
		if s != nil {
			// A refused stream (H3_REQUEST_REJECTED) or a lost connection
			// takes the session out of use, as for a refusal after the head
			// (ReadHead): with other servers the request goes there at once.
			classify(x.ctx, s.conn, s.refuse, err)
		}
		if x.tries++; x.tries > maxRetries {
			return x.c.giveUp(err, notSent)
		}
		x.c.log.Debug("request stream not opened; sending the request on the next session",
			"method", x.head.Method, "reason", err.Error(), "try", x.tries, KeyPeer, x.c.o.PeerHostname)
	}
}

// send opens the request stream on s (or on the early session e) and
// writes the head. The in-flight slot is taken.
func (x *Exchange) send(s *clientSession, e *earlySession) error {
	var (
		str *quic.Stream
		err error
	)
	if s != nil {
		// Counted before the stream opens: once its HEADERS are out the
		// server may answer GOAWAY at any moment, and a session that
		// counted no exchange would close under it (goneAway).
		s.active.Add(1)
	}
	sent := false
	defer func() {
		if !sent && s != nil {
			s.exchangeDone()
		}
	}()
	if e != nil {
		str, err = e.open(x.ctx)
	} else {
		str, err = s.conn.OpenStreamSync(x.ctx)
	}
	if err != nil {
		if e != nil {
			return fmt.Errorf("%w: %w", errEarlyGone, err)
		}
		return fmt.Errorf("opening request stream: %w", err)
	}
	qs := qstream{str}
	w := h3.NewWriter(qs)
	if e != nil {
		w.SetPeerLimit(e.h3.peerFieldLimit())
	} else {
		w.SetPeerLimit(s.h3.peerFieldLimit())
	}
	if err = w.WriteHead(x.head); err == nil && x.bodiless {
		if h := x.c.testHookHead.Load(); h != nil {
			(*h)(str)
		}
		if err = w.Close(); err != nil && peerStoppedCleanly(str) {
			// The head went out and the server already answered and
			// stopped reading (STOP_SENDING with H3_NO_ERROR, RFC 9114
			// 4.1) before the FIN left: the request is being answered.
			// Read the answer; sending it again would run it twice.
			err = nil
		}
	}
	if err != nil {
		// An early stream is never touched again (see earlySession);
		// others are reset.
		if e == nil {
			qs.CancelRead(h3.ErrCodeRequestCanceled)
			qs.CancelWrite(h3.ErrCodeRequestCanceled)
		}
		w.Release()
		return fmt.Errorf("sending request head: %w", withPeerStop(err, str))
	}
	if h := x.c.testHookSent.Load(); h != nil && s != nil {
		(*h)()
	}
	sent = true
	x.cancelMu.Lock()
	x.str, x.w, x.sess, x.early = str, w, s, e
	if e != nil {
		x.conn = e.conn
	} else {
		x.conn = s.conn
	}
	x.r = h3.NewReader(qs, h3.ReadsResponse, h3.Limits{MaxFieldSectionSize: x.c.o.MaxFieldSectionSize})
	if x.head.Method == "HEAD" {
		x.r.SetNoBody()
	}
	x.cancelMu.Unlock()
	if x.stop == nil {
		x.stop = context.AfterFunc(x.ctx, x.Cancel)
	}
	if x.cancelled.Load() {
		x.resetStream()
	}
	return nil
}

// WriteData sends p as one DATA frame.
func (x *Exchange) WriteData(p []byte) error { return x.w.WriteData(p) }

// CloseWrite ends the request: trailers (if any), then FIN.
func (x *Exchange) CloseWrite(trailers httpio.Header) error {
	if len(trailers) > 0 {
		if err := x.w.WriteTrailers(trailers); err != nil {
			return err
		}
	}
	err := x.w.Close()
	if err == nil {
		x.wroteDone.Store(true)
		return nil
	}
	return withPeerStop(err, x.str)
}

// peerStoppedCleanly reports whether the peer stopped reading str with
// H3_NO_ERROR: it needs no more of the request (it answered early).
func peerStoppedCleanly(str *quic.Stream) bool {
	se, ok := errors.AsType[*quic.StreamError](context.Cause(str.Context()))
	return ok && se.Remote && se.ErrorCode == quic.StreamErrorCode(h3.ErrCodeNoError)
}

// withPeerStop adds to err the peer's STOP_SENDING (a *quic.StreamError)
// when the peer stopped str: quic-go's error for closing such a stream
// does not carry the peer's code, which tells a server refusing the
// request (H3_REQUEST_REJECTED) from one that answered early and needs no
// more body (H3_NO_ERROR). The stream's context has it.
func withPeerStop(err error, str *quic.Stream) error {
	if se, ok := errors.AsType[*quic.StreamError](context.Cause(str.Context())); ok && se.Remote && !errors.Is(err, se) {
		return fmt.Errorf("%w (%w)", err, se)
	}
	return err
}

// ReadHead returns the next response head: interim (1xx) heads first, then
// the final one. A failure before any head is classified, and the request
// sent again when it allows (see Open).
func (x *Exchange) ReadHead() (*h3.Head, error) {
	for {
		if x.early != nil {
			if err := x.confirmEarly(); err != nil {
				if rerr := x.resend(err, notSent); rerr != nil {
					x.resendable = x.ctx.Err() == nil && mayResend(x.head, x.bodiless, notSent)
					return nil, rerr
				}
				continue
			}
		}
		h, err := x.r.ReadHead()
		if err == nil {
			x.gotHead = true
			if h.Status >= 200 && (h.Status == 204 || h.Status == 304) {
				x.r.SetNoBody()
			}
			return h, nil
		}
		if x.ctx.Err() != nil {
			return nil, x.ctx.Err()
		}
		if x.gotHead {
			return nil, err
		}
		refuse := func(error) {}
		if x.sess != nil {
			refuse = x.sess.refuse
		}
		class := classify(x.ctx, x.conn, refuse, err)
		if rerr := x.resend(err, class); rerr != nil {
			x.resendable = x.ctx.Err() == nil && mayResend(x.head, x.bodiless, class)
			return nil, rerr
		}
	}
}

// Resendable reports whether the request may be sent through another
// client after ReadHead failed: the server refused it unprocessed (or it
// never left), or it was lost with its connection and is replayable
// (bodiless and idempotent, as for a resend on this client); never once a
// head arrived or the caller gave up.
func (x *Exchange) Resendable() bool { return x.resendable }

// resend sends the request again on the next session after err (of class)
// ended its stream before any head, when the request allows it; otherwise
// it returns the error the caller gets.
func (x *Exchange) resend(err error, class retryClass) error {
	if !mayResend(x.head, x.bodiless, class) || x.tries >= maxRetries {
		if x.lostErr != nil {
			return x.lostErr
		}
		return x.c.giveUp(err, class)
	}
	x.tries++
	if class == lost && x.lostErr == nil {
		x.lostErr = err
	}
	x.c.log.Debug("request not processed by the server; sending it again on the next session",
		"method", x.head.Method, "reason", err.Error(), "try", x.tries, KeyPeer, x.c.o.PeerHostname)
	x.abandon()
	if serr := x.start(); serr != nil {
		x.c.acquireFailed()
		return serr
	}
	return nil
}

// mayResend reports whether a request whose stream failed with class
// may be sent again: only a bodiless one (a streamed body cannot be read
// twice), and after a lost connection only an idempotent one (the server
// may have processed it).
func mayResend(h *h3.Head, bodiless bool, class retryClass) bool {
	switch class {
	case notSent, refused:
		return bodiless
	case lost:
		return bodiless && idempotent(h)
	}
	return false
}

// confirmEarly waits until the early data carrying the request is known to
// be accepted (the handshake completed with 0-RTT used). If it was not, the
// request never reached the server's application.
func (x *Exchange) confirmEarly() error {
	e := x.early
	select {
	case <-e.conn.HandshakeComplete():
		if !e.conn.ConnectionState().Used0RTT {
			x.c.afterAttempt(e, x.ctx, notSent)
			return errEarlyGone
		}
	case <-e.conn.Context().Done():
		x.c.afterAttempt(e, x.ctx, notSent)
		return fmt.Errorf("%w: %w", errEarlyGone, context.Cause(e.conn.Context()))
	case <-x.ctx.Done():
		return x.ctx.Err()
	}
	x.early = nil
	return nil
}

// abandon gives up the current stream before a resend: it releases the
// in-flight slot and resets the stream, unless it belongs to an early
// session whose data was not accepted (such a stream is never touched
// again, see earlySession).
func (x *Exchange) abandon() {
	x.cancelMu.Lock()
	str, early, w, r, sess := x.str, x.early, x.w, x.r, x.sess
	x.str, x.w, x.r, x.sess = nil, nil, nil, nil
	x.cancelMu.Unlock()
	if sess != nil {
		defer sess.exchangeDone()
	}
	if early == nil && str != nil {
		str.CancelRead(quic.StreamErrorCode(h3.ErrCodeRequestCanceled))
		str.CancelWrite(quic.StreamErrorCode(h3.ErrCodeRequestCanceled))
	}
	if w != nil {
		w.Release()
	}
	if r != nil {
		r.Release()
	}
	x.c.release()
}

// acquireFailed balances Close's release after a resend found no slot.
func (c *Client) acquireFailed() {
	c.mu.Lock()
	c.inflight++
	c.mu.Unlock()
}

// NextData advances to the next DATA frame of the response body and
// returns its length; io.EOF at the end of the body.
func (x *Exchange) NextData() (int64, error) {
	n, err := x.r.NextData()
	if err == io.EOF {
		x.respDone = true
	}
	return n, err
}

// ReadData reads response body bytes, never across a DATA frame boundary.
func (x *Exchange) ReadData(p []byte) (int, error) {
	n, err := x.r.ReadData(p)
	if err == io.EOF {
		x.respDone = true
	}
	return n, err
}

// FrameLeft is what is left of the current DATA frame.
func (x *Exchange) FrameLeft() int64 { return x.r.FrameLeft() }

// Trailers are the response's trailer fields, once the body ended.
func (x *Exchange) Trailers() httpio.Header { return x.r.Trailers() }

// SetNoBody tells the reader that no body may follow the final head.
func (x *Exchange) SetNoBody() { x.r.SetNoBody() }

// Cancel resets the stream both ways with H3_REQUEST_CANCELLED. Safe from
// any goroutine, idempotent. A stream on an early session is reset only
// once its early data is known to be accepted.
func (x *Exchange) Cancel() {
	if !x.cancelled.CompareAndSwap(false, true) {
		return
	}
	x.resetStream()
}

func (x *Exchange) resetStream() {
	x.cancelMu.Lock()
	str, early := x.str, x.early
	x.cancelMu.Unlock()
	if str == nil {
		return
	}
	reset := func() {
		str.CancelRead(quic.StreamErrorCode(h3.ErrCodeRequestCanceled))
		str.CancelWrite(quic.StreamErrorCode(h3.ErrCodeRequestCanceled))
	}
	if early != nil {
		context.AfterFunc(early.decided, func() {
			if early.accepted.Load() {
				reset()
			}
		})
		return
	}
	reset()
}

// Close ends the exchange: a response not read to its end cancels the
// stream; a request side still open after a complete response is reset
// (the server has answered and needs no more of it). It releases the
// in-flight slot.
func (x *Exchange) Close() {
	if x.closed {
		return
	}
	x.closed = true
	if x.stop != nil {
		x.stop()
	}
	x.wait.stop()
	switch {
	case !x.respDone:
		x.Cancel()
	case !x.wroteDone.Load() && x.str != nil:
		x.str.CancelWrite(quic.StreamErrorCode(h3.ErrCodeRequestCanceled))
	}
	if x.w != nil {
		x.w.Release()
	}
	if x.r != nil {
		x.r.Release()
	}
	if x.sess != nil {
		x.sess.exchangeDone()
	}
	x.c.release()
}
