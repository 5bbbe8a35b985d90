package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/ptproxy/ptproxy/httpio/h3"
	"github.com/quic-go/quic-go"
)

// localSettings is what both ends announce: a static-table-only QPACK
// (capacity 0, so no encoder or decoder stream is needed, RFC 9204 3.2.3),
// extended CONNECT (RFC 9220), so upgrades can follow, and the field
// section limit our reader enforces (0: the reader's default), so the
// peer can refuse an oversized head itself with a clear status instead of
// sending it into a stream error.
func localSettings(maxFieldSection uint64) h3.Settings {
	if maxFieldSection == 0 {
		maxFieldSection = h3.DefaultMaxFieldSectionSize
	}
	return h3.Settings{EnableConnectProtocol: true, MaxFieldSectionSize: maxFieldSection}
}

// h3Conn is the connection-level HTTP/3 layer of one QUIC connection, for
// either role: our control stream with SETTINGS, and the peer's
// unidirectional streams (its control stream with SETTINGS and GOAWAY; QPACK
// streams, which are read and discarded; anything else refused). Request
// streams are not its business.
//
// Its goroutines (one accepting unidirectional streams, one per accepted
// stream) are owned by it and end when the connection closes; wait joins
// them.
type h3Conn struct {
	conn   *quic.Conn
	log    *slog.Logger
	server bool

	ctrlMu sync.Mutex // serialises writes on ctrl (GOAWAY after SETTINGS)
	ctrl   *quic.SendStream

	settings     chan struct{} // closed when the peer's SETTINGS arrived
	peerSettings h3.Settings   // written before settings is closed

	goaway   chan struct{} // closed when the peer's first GOAWAY arrived
	goawayID atomic.Uint64 // the latest GOAWAY id (valid once goaway is closed)
	hookMu   sync.Mutex    // orders the GOAWAY hook against the first GOAWAY
	gotAway  bool          // guarded by hookMu
	onGoAway func()        // guarded by hookMu

	peerCtrl   atomic.Bool   // the peer's control stream was seen (a second one is an error)
	acceptDone chan struct{} // closed when acceptUni returned
	wg         sync.WaitGroup
}

// newH3Conn opens our control stream and starts reading the peer's
// unidirectional streams. On error the connection was closed.
func newH3Conn(conn *quic.Conn, server bool, maxFieldSection uint64, log *slog.Logger) (*h3Conn, error) {
	c := &h3Conn{conn: conn, log: log, server: server,
		settings: make(chan struct{}), goaway: make(chan struct{}), acceptDone: make(chan struct{})}
	ctrl, err := conn.OpenUniStream()
	if err != nil {
		_ = conn.CloseWithError(quic.ApplicationErrorCode(h3.ErrCodeInternalError), "")
		return nil, fmt.Errorf("opening the HTTP/3 control stream: %w", err)
	}
	c.ctrl = ctrl
	if _, err := ctrl.Write(h3.AppendControlPreface(nil, localSettings(maxFieldSection))); err != nil {
		_ = conn.CloseWithError(quic.ApplicationErrorCode(h3.ErrCodeInternalError), "")
		return nil, fmt.Errorf("sending HTTP/3 SETTINGS: %w", err)
	}
	c.wg.Add(1)
	go c.acceptUni()
	return c, nil
}

// ReceivedSettings is closed once the peer's SETTINGS arrived. A server
// sends them only after it verified our certificate (see Server.serveConn),
// so a client takes them as "accepted".
func (c *h3Conn) ReceivedSettings() <-chan struct{} { return c.settings }

// PeerSettings returns the peer's SETTINGS; only valid once
// ReceivedSettings is closed.
func (c *h3Conn) PeerSettings() h3.Settings { return c.peerSettings }

// peerFieldLimit is the peer's SETTINGS_MAX_FIELD_SECTION_SIZE, or 0 (no
// limit) while its SETTINGS have not arrived: RFC 9114 7.2.4.2 has an
// endpoint use the default, unlimited, until then.
func (c *h3Conn) peerFieldLimit() uint64 {
	select {
	case <-c.settings:
		return c.peerSettings.MaxFieldSectionSize
	default:
		return 0
	}
}

// GoAway is closed when the peer sent GOAWAY: no new request may be sent
// (client), or the peer will take no more pushes (server; unused).
func (c *h3Conn) GoAway() <-chan struct{} { return c.goaway }

// setGoAwayHook sets the function run (once, on the control stream's
// goroutine, or at once when it already came) when the peer's GOAWAY
// arrives.
func (c *h3Conn) setGoAwayHook(f func()) {
	c.hookMu.Lock()
	c.onGoAway = f
	got := c.gotAway
	c.hookMu.Unlock()
	if got {
		f()
	}
}

// sendGoAway announces that request streams with id >= id will not be
// processed (RFC 9114 5.2).
func (c *h3Conn) sendGoAway(id uint64) error {
	c.ctrlMu.Lock()
	defer c.ctrlMu.Unlock()
	_, err := c.ctrl.Write(h3.AppendGoAway(nil, id))
	return err
}

// close closes the connection with H3_NO_ERROR.
func (c *h3Conn) close(reason string) {
	_ = c.conn.CloseWithError(quic.ApplicationErrorCode(h3.ErrCodeNoError), reason)
}

// wait joins the goroutines; they end once the connection is closed.
func (c *h3Conn) wait() { c.wg.Wait() }

// fail closes the connection with the error code of a protocol violation.
func (c *h3Conn) fail(err error) {
	code, reason := h3.ErrCodeGeneralProtocolError, err.Error()
	if he, ok := errors.AsType[*h3.Error](err); ok {
		code = he.Code
	}
	if c.conn.Context().Err() == nil {
		c.log.Warn("closing connection: HTTP/3 protocol error from peer", KeyRemoteAddr, c.conn.RemoteAddr().String(), KeyReason, reason)
	}
	_ = c.conn.CloseWithError(quic.ApplicationErrorCode(code), "")
}

// failUnlessGone fails the connection for an error on a critical stream,
// unless the error is the connection's own end.
func (c *h3Conn) failUnlessGone(err error) {
	if c.conn.Context().Err() != nil || isConnError(err) {
		return
	}
	c.fail(err)
}

// waitAcceptor waits until the stream acceptor ended (the connection
// closed, or its stream maps were reset by a 0-RTT rejection).
func (c *h3Conn) waitAcceptor() { <-c.acceptDone }

func (c *h3Conn) acceptUni() {
	defer c.wg.Done()
	defer close(c.acceptDone)
	for {
		str, err := c.conn.AcceptUniStream(context.Background())
		if err != nil {
			return // the connection is gone
		}
		c.wg.Add(1)
		go c.serveUni(str)
	}
}

// serveUni dispatches one of the peer's unidirectional streams by its type
// (RFC 9114 6.2).
func (c *h3Conn) serveUni(str *quic.ReceiveStream) {
	defer c.wg.Done()
	typ, err := h3.ReadStreamType(str)
	if err != nil {
		return // reset or connection gone before its type: nothing to do
	}
	switch typ {
	case h3.StreamTypeControl:
		if !c.peerCtrl.CompareAndSwap(false, true) {
			c.fail(&h3.Error{Code: h3.ErrCodeStreamCreationError, Conn: true, Reason: "second control stream"})
			return
		}
		c.readControl(str)
	case h3.StreamTypeQPACKEncoder, h3.StreamTypeQPACKDecoder:
		// With a table capacity of 0 nothing on them matters; they stay
		// open for the connection's life and are drained.
		_, _ = io.Copy(io.Discard, str)
	case h3.StreamTypePush:
		if c.server {
			c.fail(&h3.Error{Code: h3.ErrCodeStreamCreationError, Conn: true, Reason: "push stream opened by a client"})
		} else {
			// We never sent MAX_PUSH_ID: no push ID is valid.
			c.fail(&h3.Error{Code: h3.ErrCodeIDError, Conn: true, Reason: "push stream without MAX_PUSH_ID"})
		}
	default:
		// Unknown stream types are ignored (RFC 9114 6.2, 9).
		str.CancelRead(quic.StreamErrorCode(h3.ErrCodeStreamCreationError))
	}
}

func (c *h3Conn) readControl(str *quic.ReceiveStream) {
	cr := h3.NewControlReader(str)
	s, err := cr.ReadSettings()
	if err != nil {
		c.failUnlessGone(err)
		return
	}
	c.peerSettings = s
	close(c.settings)
	c.log.Debug("peer SETTINGS received", KeyRemoteAddr, c.conn.RemoteAddr().String(),
		"max_field_section_size", s.MaxFieldSectionSize, "extended_connect", s.EnableConnectProtocol)
	for {
		id, err := cr.NextGoAway()
		if err != nil {
			c.failUnlessGone(err)
			return
		}
		c.goawayID.Store(id)
		c.hookMu.Lock()
		first := !c.gotAway
		c.gotAway = true
		hook := c.onGoAway
		if first {
			close(c.goaway)
		}
		c.hookMu.Unlock()
		if first && hook != nil {
			hook()
		}
	}
}

// qstream adapts a quic-go stream to the codec's Stream.
type qstream struct{ *quic.Stream }

func (s qstream) CancelRead(code h3.ErrCode)  { s.Stream.CancelRead(quic.StreamErrorCode(code)) }
func (s qstream) CancelWrite(code h3.ErrCode) { s.Stream.CancelWrite(quic.StreamErrorCode(code)) }
