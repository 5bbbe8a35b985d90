package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// maxRetries bounds how often one RoundTrip re-sends a request that was
// refused unprocessed (or lost with its connection, when replayable).
const maxRetries = 2

// errFirstAttempt is the NotReadyError reason before any attempt ended.
var errFirstAttempt = errors.New("first connection attempt in progress")

// retryClass says what a failed exchange allows.
type retryClass uint8

const (
	// noRetry: the request may have been processed, or the caller gave up.
	noRetry retryClass = iota
	// notSent: the request never left this client (no request stream was
	// opened, or its early data was rejected or its attempt failed): any
	// method is retried; the body was not read.
	notSent
	// refused: the server refused the stream without processing it
	// (H3_REQUEST_REJECTED after its GOAWAY, H3_REQUEST_INCOMPLETE before
	// the handler; RFC 9114 5.2, 8.1): any method is retried if its body
	// can be sent again.
	refused
	// lost: the connection ended before a response arrived; the server may
	// have processed the request, so only a replayable (idempotent, body
	// rewindable) request is retried, as net/http does.
	lost
)

// RoundTrip sends req over the current session.
//
// With no usable session (none yet, the attempt in progress, or the
// current one going away after the server's GOAWAY) it waits for the next
// one, at most ClientOptions.SessionWait in total, then returns a
// [*NotReadyError] (errors.Is ErrNotReady); with SessionWait 0 it returns
// that at once. The wait ends early with ErrDraining when Drain is called
// or Run stops, and with the request context's error when the caller gives
// up. A bodiless GET/HEAD may ride an attempt in progress as 0-RTT early
// data (Early0RTT).
//
// A request the server never processed (refused after its GOAWAY, 0-RTT
// rejected, no stream opened) is sent again on the next session, and so is
// a replayable request whose connection died before any response (at most
// maxRetries times, within the same wait budget). A refused request that
// cannot be sent again (its body was read) is answered like a request
// without a session (NotReadyError, 503), never as a gateway error; a
// request lost with its connection that cannot be sent again keeps that
// error (the server may have processed it: a gateway error, 502).
//
// The request counts as in flight while it is sent and until the response
// body hits EOF or is closed.
func (c *Client) RoundTrip(req *http.Request) (*http.Response, error) {
	c.mu.Lock()
	draining := c.draining
	c.mu.Unlock()
	if draining {
		return nil, ErrDraining
	}
	w := sessionWait{c: c, ctx: req.Context(), budget: c.o.SessionWait}
	defer w.stop()
	early := Early0RTT(req)
	var lostErr error // the request may have been processed: a failed resend reports this
	for try := 0; ; try++ {
		s, e, err := c.acquire(&w, early)
		if err != nil {
			if lostErr != nil && req.Context().Err() == nil {
				return nil, lostErr
			}
			return nil, err
		}
		var (
			resp  *http.Response
			class retryClass
		)
		if e != nil {
			early = false // an early session is ridden at most once
			resp, class, err = c.roundTripEarly(e, req)
		} else {
			resp, err = s.cc.RoundTrip(req)
			class = classify(s, req, err)
		}
		if err == nil {
			return c.tracked(resp), nil
		}
		c.release()
		if class == noRetry {
			return nil, err
		}
		next, ok := replay(req, class)
		if !ok || try >= maxRetries {
			if lostErr != nil {
				return nil, lostErr
			}
			return nil, c.giveUp(err, class)
		}
		if class == lost && lostErr == nil {
			lostErr = err
		}
		c.log.Debug("request not processed by the server; sending it again on the next session",
			"method", req.Method, "reason", err.Error(), "try", try+1, KeyPeer, c.o.PeerHostname)
		req = next
	}
}

// giveUp is the error of a request that cannot be retried: one the server
// never processed gets the no-session answer (503), the rest keep their
// error (502).
func (c *Client) giveUp(err error, class retryClass) error {
	switch class {
	case notSent, refused:
		if isGoAway(err) {
			return &NotReadyError{Reason: ErrServerGoaway}
		}
		return &NotReadyError{Reason: err}
	}
	return err
}

// acquire returns a usable session (or, for a request that may go early,
// the early session of the attempt in progress) with the in-flight slot
// taken, waiting for one within w's budget.
func (c *Client) acquire(w *sessionWait, early bool) (*clientSession, *earlySession, error) {
	for {
		c.mu.Lock()
		if c.draining {
			c.mu.Unlock()
			return nil, nil, ErrDraining
		}
		s := c.cur.Load()
		if s != nil && s.usable() {
			c.inflight++
			c.mu.Unlock()
			return s, nil, nil
		}
		if e := c.early.Load(); e != nil && early {
			c.inflight++
			c.mu.Unlock()
			return nil, e, nil
		}
		ch := c.sessCh
		waits := w.budget > 0
		if waits {
			c.waiting++
		}
		c.mu.Unlock()
		err := w.wait(ch, s)
		if waits {
			c.mu.Lock()
			c.waiting--
			c.mu.Unlock()
		}
		if err != nil {
			return nil, nil, err
		}
	}
}

// sessionWait is one request's budget for waiting on a session: a single
// deadline across its retries, one timer (no goroutine), woken by the
// client's broadcast channel.
type sessionWait struct {
	c        *Client
	ctx      context.Context
	budget   time.Duration
	deadline time.Time
	timer    *time.Timer
}

// wait blocks until ch is closed (a session or an early session was
// published) and returns nil, or returns why it stopped waiting. cur is
// the session that was not usable (nil when none), for the reason.
func (w *sessionWait) wait(ch <-chan struct{}, cur *clientSession) error {
	if w.budget <= 0 {
		return w.c.notReady(cur)
	}
	if w.timer == nil {
		w.deadline = time.Now().Add(w.budget)
		w.timer = time.NewTimer(w.budget)
	}
	select {
	case <-ch:
		return nil
	case <-w.timer.C:
		w.budget = 0 // spent: later calls answer at once
		return w.c.notReady(cur)
	case <-w.ctx.Done():
		return w.ctx.Err()
	case <-w.c.drainCh:
		return ErrDraining
	case <-w.c.done:
		return ErrDraining
	}
}

func (w *sessionWait) stop() {
	if w.timer != nil {
		w.timer.Stop()
	}
}

// notReady is the answer when no session is usable: the reason the
// current session refuses requests, or the latest failure.
func (c *Client) notReady(cur *clientSession) error {
	if cur != nil {
		if r := cur.refusal(); r != nil {
			return &NotReadyError{Reason: r}
		}
	}
	reason := c.m.LastError()
	if reason == nil {
		reason = errFirstAttempt
	}
	return &NotReadyError{Reason: reason}
}

// notifySession wakes every request waiting for a session.
func (c *Client) notifySession() {
	c.mu.Lock()
	close(c.sessCh)
	c.sessCh = make(chan struct{})
	c.mu.Unlock()
}

// classify says whether a failed exchange on s may be retried, and marks s
// as refusing new requests when the failure shows it takes none (GOAWAY,
// connection gone), so that later requests wait for the next session.
func classify(s *clientSession, req *http.Request, err error) retryClass {
	if err == nil || req.Context().Err() != nil {
		return noRetry
	}
	if isConnUnusable(err) {
		// http3 could not open a request stream (GOAWAY received, or the
		// connection is closed): nothing was sent.
		if isGoAway(err) {
			s.refuse(ErrServerGoaway)
		} else {
			s.refuse(err)
		}
		return notSent
	}
	if code, ok := remoteStreamCode(err); ok {
		switch code {
		case http3.ErrCodeRequestRejected:
			s.refuse(ErrServerGoaway)
			return refused
		case http3.ErrCodeRequestIncomplete:
			return refused
		}
	}
	if s.conn.Context().Err() != nil || isConnError(err) {
		s.refuse(lostReason(connCause(s.conn, err)))
		return lost
	}
	return noRetry
}

// isConnError reports whether err is the end of the whole connection
// (quic-go's connection-level errors), which a request can learn before
// the connection's context is cancelled.
func isConnError(err error) bool {
	if _, ok := errors.AsType[*quic.ApplicationError](err); ok {
		return true
	}
	if _, ok := errors.AsType[*quic.TransportError](err); ok {
		return true
	}
	if _, ok := errors.AsType[*quic.IdleTimeoutError](err); ok {
		return true
	}
	_, ok := errors.AsType[*quic.StatelessResetError](err)
	return ok
}

// connCause is why conn ended: its context's cause once set, else err.
func connCause(conn *quic.Conn, err error) error {
	if conn.Context().Err() != nil {
		return context.Cause(conn.Context())
	}
	if ae, ok := errors.AsType[*quic.ApplicationError](err); ok {
		return ae
	}
	return err
}

// remoteStreamCode returns the HTTP/3 error code the server reset the
// request with (http3.Error, or the quic.StreamError it wraps).
func remoteStreamCode(err error) (http3.ErrCode, bool) {
	if he, ok := errors.AsType[*http3.Error](err); ok {
		return he.ErrorCode, he.Remote
	}
	if se, ok := errors.AsType[*quic.StreamError](err); ok {
		return http3.ErrCode(se.ErrorCode), se.Remote
	}
	return 0, false
}

// isConnUnusable matches http3's error for a request whose stream could
// not be opened (unexported type errConnUnusable, "http3: conn unusable:
// ..."; its cause is the GOAWAY refusal "connection in graceful shutdown"
// or the connection's close). TestGoAwayIs503 and
// TestGoAwayRetriedOnNextSession pin it against the real http3.
func isConnUnusable(err error) bool {
	return strings.HasPrefix(err.Error(), "http3: conn unusable")
}

// isGoAway reports whether err says the request was refused unprocessed
// because the server is going away: http3's refusal to open a request
// stream after the server's GOAWAY (RFC 9114 5.2; quic-go does not export
// that error, so its text is matched), or the server's H3_REQUEST_REJECTED
// for a stream it received after sending GOAWAY.
func isGoAway(err error) bool {
	if errors.Is(err, ErrServerGoaway) {
		return true
	}
	if code, remote := remoteStreamCode(err); remote && code == http3.ErrCodeRequestRejected {
		return true
	}
	return strings.Contains(err.Error(), "connection in graceful shutdown")
}

// replay returns the request to send again after a failure of class, or
// false when it cannot be sent again: a body that was (maybe) read must be
// rewindable (GetBody), and a request lost with its connection must also
// be idempotent.
func replay(req *http.Request, class retryClass) (*http.Request, bool) {
	if class == lost && !idempotent(req) {
		return nil, false
	}
	if class == notSent || req.Body == nil || req.Body == http.NoBody {
		return req, true
	}
	if req.GetBody == nil {
		return nil, false
	}
	body, err := req.GetBody()
	if err != nil {
		return nil, false
	}
	r := *req
	r.Body = body
	return &r, true
}

// idempotent follows net/http's rule for requests it retries by itself
// after a connection loss: GET, HEAD, OPTIONS, TRACE, or a request that
// carries an Idempotency-Key.
func idempotent(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, k1 := req.Header["Idempotency-Key"]
	_, k2 := req.Header["X-Idempotency-Key"]
	return k1 || k2
}

// Early0RTT reports whether req may be sent as 0-RTT early data: only the
// safe methods GET and HEAD, and only without a body, so a retry after a
// 0-RTT rejection is exact. Early data can be replayed by an attacker; a
// replayed GET or HEAD is harmless by RFC 9110's definition of safe
// methods, a replayed POST is not.
func Early0RTT(req *http.Request) bool {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		return false
	}
	return req.ContentLength == 0 && (req.Body == nil || req.Body == http.NoBody)
}

// errEarlyGone is why an early request was not answered on its early
// session: the attempt moved on without it (0-RTT rejected, the attempt
// failed or another dial of it won).
var errEarlyGone = errors.New("early data not accepted")

// roundTripEarly sends req, which Early0RTT allows, as 0-RTT early data
// over the connection of an attempt in progress (the in-flight slot is
// taken).
//
// The request stream is driven by hand (OpenRequestStream) rather than by
// http3.ClientConn.RoundTrip, and is never touched again unless the server
// accepted the early data: after a rejection quic-go resets its stream maps
// for 1-RTT, and any later call on the old stream can leak into the new
// connection. (http3's RoundTrip resets a failed stream with CancelWrite;
// quic-go's shutdown of a stream whose FIN was already sent leaves its send
// side open, so that RESET_STREAM went out in 1-RTT, the server answered on
// a stream the reset connection never opened, and the client closed the
// connection with STREAM_STATE_ERROR "peer attempted to open stream 0":
// issue 10, TestRestartWithRejected0RTTReconnects.)
//
// If the early data was not accepted, the request never reached the
// server's application: the caller sends it again (class notSent) after
// this attempt ended, as if it had come a moment later.
func (c *Client) roundTripEarly(e *earlySession, req *http.Request) (*http.Response, retryClass, error) {
	ctx := req.Context()
	str, err := e.send(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, noRetry, ctx.Err()
		}
		return nil, c.afterAttempt(e, ctx, notSent), fmt.Errorf("sending early request: %w", err)
	}
	select {
	case <-e.conn.HandshakeComplete():
		if !e.conn.ConnectionState().Used0RTT {
			return nil, c.afterAttempt(e, ctx, notSent), errEarlyGone
		}
	case <-e.conn.Context().Done():
		return nil, c.afterAttempt(e, ctx, notSent), fmt.Errorf("%w: %w", errEarlyGone, context.Cause(e.conn.Context()))
	case <-ctx.Done():
		// The stream may only be reset once the early data is known to be
		// accepted; the attempt decides that within its bound.
		context.AfterFunc(e.decided, func() {
			if e.accepted.Load() {
				str.CancelRead(quic.StreamErrorCode(http3.ErrCodeRequestCanceled))
				str.CancelWrite(quic.StreamErrorCode(http3.ErrCodeRequestCanceled))
			}
		})
		return nil, noRetry, ctx.Err()
	}
	resp, err := readResponse(e, str, req)
	if err != nil {
		return nil, classifyEarly(e, req, err), err
	}
	return resp, noRetry, nil
}

// afterAttempt waits for the attempt that carried the early session to end
// (it then published its session, if any), so a retry finds that session
// even without a wait budget: the one wait of a request sent early, at
// most the attempt bound.
func (c *Client) afterAttempt(e *earlySession, ctx context.Context, class retryClass) retryClass {
	select {
	case <-e.settled:
		return class
	case <-ctx.Done():
		return noRetry
	}
}

func classifyEarly(e *earlySession, req *http.Request, err error) retryClass {
	if req.Context().Err() != nil {
		return noRetry
	}
	if code, remote := remoteStreamCode(err); remote &&
		(code == http3.ErrCodeRequestRejected || code == http3.ErrCodeRequestIncomplete) {
		return refused
	}
	if e.conn.Context().Err() != nil || isConnError(err) {
		return lost
	}
	return noRetry
}

// readResponse reads the response of an accepted early request, skipping
// interim responses as http3.ClientConn does (reported to the request's
// httptrace), and resets the stream when the request context ends.
func readResponse(e *earlySession, str *http3.RequestStream, req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	cancelStream := func() {
		str.CancelRead(quic.StreamErrorCode(http3.ErrCodeRequestCanceled))
		str.CancelWrite(quic.StreamErrorCode(http3.ErrCodeRequestCanceled))
	}
	stop := context.AfterFunc(ctx, cancelStream)
	trace := httptrace.ContextClientTrace(ctx)
	for interim := 0; ; {
		resp, err := str.ReadResponse()
		if err != nil {
			stop()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, err
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			if interim++; interim > maxInterim {
				stop()
				cancelStream()
				return nil, errors.New("http3: too many 1xx informational responses")
			}
			if trace != nil && trace.Got1xxResponse != nil {
				_ = trace.Got1xxResponse(resp.StatusCode, textproto.MIMEHeader(resp.Header))
			}
			continue
		}
		st := e.conn.ConnectionState().TLS
		resp.TLS = &st
		resp.Request = req
		resp.Body = &stopBody{ReadCloser: resp.Body, stop: stop}
		return resp, nil
	}
}

// maxInterim bounds 1xx responses per request, as http3.ClientConn does.
const maxInterim = 5

// stopBody unregisters the request's cancellation at EOF or Close.
type stopBody struct {
	io.ReadCloser
	stop func() bool
}

func (b *stopBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.stop()
	}
	return n, err
}

func (b *stopBody) Close() error {
	b.stop()
	return b.ReadCloser.Close()
}

// tracked ties the in-flight slot to the response body.
func (c *Client) tracked(resp *http.Response) *http.Response {
	if resp.Body == nil {
		c.release()
		return resp
	}
	resp.Body = &trackedBody{ReadCloser: resp.Body, release: c.release}
	return resp
}

func (c *Client) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inflight--
	if c.inflight == 0 && c.idleCh != nil {
		close(c.idleCh)
		c.idleCh = nil
	}
}

// trackedBody releases its in-flight slot once, at EOF or Close.
type trackedBody struct {
	io.ReadCloser
	release func()
	once    sync.Once
}

func (b *trackedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.once.Do(b.release)
	}
	return n, err
}

func (b *trackedBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.release)
	return err
}
