package session

import (
	"context"
	"errors"
	"time"

	"github.com/ptproxy/ptproxy/httpio"
	"github.com/ptproxy/ptproxy/httpio/h3"
	"github.com/quic-go/quic-go"
)

// maxRetries bounds how often one exchange re-sends a request that was
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
func classify(ctx context.Context, conn *quic.Conn, refuse func(error), err error) retryClass {
	if err == nil || ctx.Err() != nil {
		return noRetry
	}
	if code, ok := remoteStreamCode(err); ok {
		switch code {
		case h3.ErrCodeRequestRejected:
			refuse(ErrServerGoaway)
			return refused
		case h3.ErrCodeRequestIncomplete:
			return refused
		}
	}
	if conn.Context().Err() != nil || isConnError(err) {
		refuse(lostReason(connCause(conn, err)))
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

// remoteStreamCode returns the HTTP/3 error code the peer reset the
// stream with.
func remoteStreamCode(err error) (h3.ErrCode, bool) {
	if se, ok := errors.AsType[*quic.StreamError](err); ok {
		return h3.ErrCode(se.ErrorCode), se.Remote
	}
	return 0, false
}

// isGoAway reports whether err says the request was refused unprocessed
// because the server is going away: the server's H3_REQUEST_REJECTED for
// a stream at or above its GOAWAY id (RFC 9114 5.2).
func isGoAway(err error) bool {
	if errors.Is(err, ErrServerGoaway) {
		return true
	}
	code, remote := remoteStreamCode(err)
	return remote && code == h3.ErrCodeRequestRejected
}

// idempotent follows net/http's rule for requests it retries by itself
// after a connection loss: GET, HEAD, OPTIONS, TRACE, or a request that
// carries an Idempotency-Key.
func idempotent(h *h3.Head) bool {
	switch h.Method {
	case "GET", "HEAD", "OPTIONS", "TRACE":
		return true
	}
	for _, f := range h.Fields {
		if httpio.EqualFold(f.Name, "idempotency-key") || httpio.EqualFold(f.Name, "x-idempotency-key") {
			return true
		}
	}
	return false
}

// Early0RTT reports whether a request may be sent as 0-RTT early data:
// only the safe methods GET and HEAD, and only without a body, so a retry
// after a 0-RTT rejection is exact. Early data can be replayed by an
// attacker; a replayed GET or HEAD is harmless by RFC 9110's definition of
// safe methods, a replayed POST is not.
func Early0RTT(h *h3.Head, bodiless bool) bool {
	return bodiless && (h.Method == "GET" || h.Method == "HEAD")
}

// errEarlyGone is why an early request was not answered on its early
// session: the attempt moved on without it (0-RTT rejected, the attempt
// failed or another dial of it won).
var errEarlyGone = errors.New("early data not accepted")

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

func (c *Client) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inflight--
	if c.inflight == 0 && c.idleCh != nil {
		close(c.idleCh)
		c.idleCh = nil
	}
}
