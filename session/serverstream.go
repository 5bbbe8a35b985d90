package session

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"sync"

	"github.com/ptproxy/ptproxy/httpio"
	"github.com/ptproxy/ptproxy/httpio/h3"
	"github.com/quic-go/quic-go"
)

// StreamHandler serves one request stream. It runs on the stream's own
// goroutine and must answer: a complete response (Close), or a reset
// (Reset). A handler that returns with neither has its stream reset, so
// no exchange ends in an invented response.
type StreamHandler interface {
	ServeStream(*ServerStream)
}

// HandlerFunc adapts a function to a StreamHandler.
type HandlerFunc func(*ServerStream)

func (f HandlerFunc) ServeStream(s *ServerStream) { f(s) }

// serverConn is the HTTP/3 side of one accepted connection: its request
// streams and its GOAWAY.
type serverConn struct {
	s        *Server
	conn     *quic.Conn
	h3       *h3Conn
	identity string // the client name its certificate matched

	mu       sync.Mutex // guards the three fields below
	next     quic.StreamID
	goaway   bool
	goawayID quic.StreamID

	streams sync.WaitGroup // one per request stream goroutine
}

// acceptRequests runs one goroutine per request stream until the
// connection ends, then waits for them.
func (sc *serverConn) acceptRequests() {
	defer sc.streams.Wait()
	for {
		str, err := sc.conn.AcceptStream(context.Background())
		if err != nil {
			return
		}
		id := str.StreamID()
		sc.mu.Lock()
		reject := sc.goaway && id >= sc.goawayID
		if !reject && id >= sc.next {
			sc.next = id + 4
		}
		sc.mu.Unlock()
		if reject {
			// After GOAWAY: not processed, so the client may send it again
			// elsewhere (RFC 9114 5.2).
			str.CancelRead(quic.StreamErrorCode(h3.ErrCodeRequestRejected))
			str.CancelWrite(quic.StreamErrorCode(h3.ErrCodeRequestRejected))
			continue
		}
		sc.streams.Add(1)
		go sc.serveStream(str)
	}
}

// goAway tells the client that no stream after those already accepted will
// be processed.
func (sc *serverConn) goAway() {
	sc.mu.Lock()
	if sc.goaway {
		sc.mu.Unlock()
		return
	}
	sc.goaway, sc.goawayID = true, sc.next
	id := sc.next
	sc.mu.Unlock()
	if err := sc.h3.sendGoAway(uint64(id)); err != nil {
		sc.s.log.Debug("sending GOAWAY", KeyRemoteAddr, sc.conn.RemoteAddr().String(), KeyReason, err.Error())
	}
}

// goAwayAll sends GOAWAY on every connection whose HTTP/3 layer is up.
func (s *Server) goAwayAll() {
	s.connsMu.Lock()
	var scs []*serverConn
	for _, sc := range s.conns {
		if sc != nil {
			scs = append(scs, sc)
		}
	}
	s.connsMu.Unlock()
	for _, sc := range scs {
		sc.goAway()
	}
}

func (sc *serverConn) serveStream(str *quic.Stream) {
	defer sc.streams.Done()
	s := sc.s
	qs := qstream{str}
	r := h3.NewReader(qs, h3.ReadsRequest, h3.Limits{MaxFieldSectionSize: s.o.MaxFieldSectionSize})
	head, err := r.ReadHead()
	if err != nil {
		r.Release()
		sc.refuseStream(qs, err)
		return
	}
	// A request in 0-RTT early data can be replayed by an attacker: only
	// safe ones (GET, HEAD) run before the handshake completed, which a
	// replayed flight never does. (Our client never sends others early.)
	if head.Method != "GET" && head.Method != "HEAD" {
		select {
		case <-sc.conn.HandshakeComplete():
		default:
			select {
			case <-sc.conn.HandshakeComplete():
				s.log.Debug("early request held until the handshake completed", "method", head.Method, KeyRemoteAddr, sc.conn.RemoteAddr().String())
			case <-str.Context().Done():
				r.Release()
				qs.CancelRead(h3.ErrCodeRequestCanceled)
				return
			}
		}
	}
	s.handlerStarted()
	defer s.handlerDone()
	// The stream's own context also ends when we close our side (FIN):
	// the handler's must end only when the client cancels or the
	// connection goes, or an origin exchange finishing after the FIN
	// would look cancelled.
	ctx, cancel := context.WithCancelCause(sc.conn.Context())
	defer cancel(nil)
	stop := context.AfterFunc(str.Context(), func() {
		if cause := context.Cause(str.Context()); !errors.Is(cause, quic.ErrStreamClosed) {
			cancel(cause)
		}
	})
	defer stop()
	ss := &ServerStream{ctx: ctx, conn: sc.conn, identity: sc.identity, str: str, req: head, r: r, w: h3.NewWriter(qs)}
	ss.w.SetPeerLimit(sc.h3.peerFieldLimit())
	s.o.Handler.ServeStream(ss)
	ss.finish()
}

// refuseStream answers a request stream whose head could not be read: a
// connection error closes the connection, a malformed message resets the
// stream with its code, and a stream that ended or was reset before its
// head is H3_REQUEST_INCOMPLETE (RFC 9114 4.1.2).
func (sc *serverConn) refuseStream(qs qstream, err error) {
	if he, ok := errors.AsType[*h3.Error](err); ok {
		if he.Conn {
			sc.h3.fail(he)
			return
		}
		sc.s.log.Debug("malformed request refused", KeyRemoteAddr, sc.conn.RemoteAddr().String(), KeyReason, he.Error())
		qs.CancelRead(he.Code)
		qs.CancelWrite(he.Code)
		return
	}
	qs.CancelRead(h3.ErrCodeRequestIncomplete)
	qs.CancelWrite(h3.ErrCodeRequestIncomplete)
}

// ServerStream is one request stream seen by the handler: the request head
// (already read and validated), its body, and the response to write.
type ServerStream struct {
	ctx      context.Context
	conn     *quic.Conn
	identity string
	str      *quic.Stream
	req      *h3.Head
	r        *h3.Reader
	w        *h3.Writer

	bodyDone bool // the request body was read to its end
	ended    bool // Close or Reset was called
	noBody   bool // the final head forbids a body (HEAD, 1xx excluded: 204, 304)
}

// ErrBodyNotAllowed is WriteData's error after a final head that allows
// no body (the response to HEAD, a 204 or a 304; RFC 9110 6.4.1).
var ErrBodyNotAllowed = errors.New("response to HEAD, 204 or 304 carries no body")

// TLS is the connection's TLS state (client certificate, resumption).
func (s *ServerStream) TLS() tls.ConnectionState { return s.conn.ConnectionState().TLS }

// Context ends when the client cancelled the stream (STOP_SENDING) or the
// connection closed; not when the response was completed.
func (s *ServerStream) Context() context.Context { return s.ctx }

func (s *ServerStream) RemoteAddr() string { return s.conn.RemoteAddr().String() }
func (s *ServerStream) LocalAddr() string  { return s.conn.LocalAddr().String() }

// PeerIdentity is the accepted client name (ServerOptions.PeerIdentities)
// the connection's certificate matched.
func (s *ServerStream) PeerIdentity() string { return s.identity }

// Request is the request head, fields in the order they arrived.
func (s *ServerStream) Request() *h3.Head { return s.req }

// NextData advances to the next DATA frame of the request body and
// returns its length; io.EOF at the end of the body.
func (s *ServerStream) NextData() (int64, error) {
	n, err := s.r.NextData()
	if err == io.EOF {
		s.bodyDone = true
	}
	return n, err
}

// ReadData reads request body bytes, never across a DATA frame boundary.
func (s *ServerStream) ReadData(p []byte) (int, error) {
	n, err := s.r.ReadData(p)
	if err == io.EOF {
		s.bodyDone = true
	}
	return n, err
}

func (s *ServerStream) FrameLeft() int64        { return s.r.FrameLeft() }
func (s *ServerStream) Trailers() httpio.Header { return s.r.Trailers() }

// StopReading tells the client that the rest of the request body is not
// wanted (STOP_SENDING with H3_NO_ERROR, RFC 9114 4.1: a complete response
// may come before the request is complete).
func (s *ServerStream) StopReading() {
	s.str.CancelRead(quic.StreamErrorCode(h3.ErrCodeNoError))
}

func (s *ServerStream) WriteHead(h *h3.Head) error          { return s.w.WriteHead(h) }
func (s *ServerStream) WriteData(p []byte) error            { return s.w.WriteData(p) }
func (s *ServerStream) WriteTrailers(f httpio.Header) error { return s.w.WriteTrailers(f) }

// Close ends the response (FIN): it is complete.
func (s *ServerStream) Close() error {
	s.ended = true
	return s.w.Close()
}

// Reset cuts the response (RESET_STREAM with H3_INTERNAL_ERROR): the
// client must not take what it got for complete.
func (s *ServerStream) Reset() {
	s.ended = true
	s.str.CancelWrite(quic.StreamErrorCode(h3.ErrCodeInternalError))
	s.str.CancelRead(quic.StreamErrorCode(h3.ErrCodeRequestCanceled))
}

// finish runs after the handler returned: a stream it left unanswered is
// reset, and an unread rest of the request body is refused.
func (s *ServerStream) finish() {
	if !s.ended {
		s.Reset()
	} else if !s.bodyDone {
		s.StopReading()
	}
	s.r.Release()
	s.w.Release()
}
