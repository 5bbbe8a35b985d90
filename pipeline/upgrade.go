package pipeline

import (
	"errors"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/ptproxy/ptproxy/httpio"
	"github.com/ptproxy/ptproxy/httpio/h3"
)

// Protocol switches (WebSocket). The caller's HTTP/1.1 "Upgrade:
// websocket" request crosses the tunnel as an extended CONNECT with
// :protocol websocket (RFC 9220) and reaches the origin as an HTTP/1.1
// upgrade again; the origin's 101 comes back as a 2xx over HTTP/3 and as a
// 101 to the caller. From then on each end splices its TCP connection to
// the stream: bytes one way become DATA frames, DATA frames the other way
// become bytes, until both directions ended. Sec-WebSocket-Key and
// Sec-WebSocket-Accept travel as ordinary fields, so the caller checks the
// origin's own answer.

// upgradeWebSocket is the one protocol a request may switch to: WebSocket
// has an HTTP/3 mapping (RFC 9220). An Upgrade to anything else is dropped
// like any hop-by-hop field and the request goes as it is.
const upgradeWebSocket = "websocket"

// spliceGrace bounds how long one direction of a switched connection may
// stay open after the other ended cleanly: WebSocket ends both at once
// (its close handshake), and a peer that never closes must not hold the
// connection, the stream and two goroutines' worth of state for ever.
var spliceGrace = 10 * time.Second

// errSpliceAborted is why a direction stopped when the other one failed
// or the grace after its end ran out.
var errSpliceAborted = errors.New("switched connection ended")

// dataSource is the receiving side of a stream: DATA frames in order.
type dataSource interface {
	NextData() (int64, error)
	ReadData(p []byte) (int, error)
}

// splice runs the two directions of a switched connection: main on the
// calling goroutine, side on one other goroutine, which it joins. Each
// returns nil once its source ended and it closed its destination's
// sending side. abort makes both return promptly; it runs when either
// fails, and when one direction outlives the other's clean end by
// spliceGrace. The first error is returned.
func splice(main, side func() error, abort func()) error {
	sideDone := make(chan error, 1)
	var grace atomic.Pointer[time.Timer]
	go func() {
		err := side()
		if err != nil {
			abort()
		} else {
			grace.Store(time.AfterFunc(spliceGrace, abort))
		}
		sideDone <- err
	}()
	mainErr := main()
	var t *time.Timer
	if mainErr != nil {
		abort()
	} else {
		t = time.AfterFunc(spliceGrace, abort)
	}
	sideErr := <-sideDone
	if t != nil {
		t.Stop()
	}
	if g := grace.Load(); g != nil {
		g.Stop()
	}
	if mainErr != nil {
		return mainErr
	}
	return sideErr
}

// copyFrames writes the DATA frames of src to dst until src ends (nil), or
// either side fails. count is told every byte written.
func copyFrames(src dataSource, dst io.Writer, count func(int)) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		n, err := src.NextData()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		for n > 0 {
			m, rerr := src.ReadData(buf[:min(n, int64(len(buf)))])
			if m > 0 {
				if _, werr := dst.Write(buf[:m]); werr != nil {
					return werr
				}
				count(m)
				n -= int64(m)
			}
			if rerr != nil && n > 0 {
				if rerr == io.EOF {
					rerr = io.ErrUnexpectedEOF
				}
				return rerr
			}
		}
	}
}

// copyRaw sends what r reads (first the bytes it buffered past the last
// head, then its connection's) as DATA frames, one per read, until the
// connection ends (nil) or either side fails.
func copyRaw(r *httpio.Reader, send func([]byte) error, count func(int)) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		m, err := r.ReadRaw(buf)
		if m > 0 {
			if werr := send(buf[:m]); werr != nil {
				return werr
			}
			count(m)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// closeWrite ends the sending side of conn (TCP FIN), so its peer sees the
// end of the protocol's bytes while it may still send.
func closeWrite(conn net.Conn) error {
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return conn.Close()
}

// switchedFields are the fields of the 101 to the caller: the origin's,
// which the server sent in the 2xx head (its hop-by-hop fields removed),
// then Connection and Upgrade for this hop.
func switchedFields(fields httpio.Header, protocol string) httpio.Header {
	out := make(httpio.Header, 0, len(fields)+2)
	out = append(out, RemoveHopByHop(removeFields(fields.Clone(), "content-length"))...)
	return append(out, httpio.Field{Name: "Connection", Value: "Upgrade"}, httpio.Field{Name: "Upgrade", Value: protocol})
}

// errSwitchFailed is an exchange the switch could not complete after the
// 101 went out: the connection is closed, which is all the caller can
// still be told.
var errSwitchFailed = errors.New("switched connection failed")

// switchProtocols completes a WebSocket upgrade on the client side: fh is
// the 2xx answer to the extended CONNECT. The caller gets the 101, then
// its connection and the stream are spliced until both directions end.
// The connection is never reused afterwards.
func (x *clientExchange) switchProtocols(ts TunnelStream, fh *h3.Head) error {
	c, h, s := x.c, x.h, &x.c.sink
	// From here the connection's bytes belong to the new protocol: the
	// hang-up watch must not read them.
	x.endWatch()
	if err := s.w.WriteResponseHead(http.StatusSwitchingProtocols, "Switching Protocols", switchedFields(fh.Fields, h.Upgrade)); err != nil {
		ts.Cancel()
		if _, refused := errors.AsType[*httpio.Error](err); refused {
			c.sink.fail(NewError(KindUpstream, ClientSide, MsgReceivingResponse, err), h.ex)
			return nil
		}
		h.ex.finish(0, Aborted, nil)
		return nil
	}
	if err := s.flush(); err != nil {
		ts.Cancel()
		h.ex.finish(http.StatusSwitchingProtocols, Cut, nil)
		return nil
	}
	ex := h.ex
	err := splice(
		func() error { // stream -> caller, on the exchange's goroutine (TunnelStream's response side)
			if err := copyFrames(ts, c.conn, ex.addResponse); err != nil {
				return err
			}
			return closeWrite(c.conn)
		},
		func() error { // caller -> stream (the request side)
			if err := copyRaw(c.r, ts.WriteData, ex.addRequest); err != nil {
				return err
			}
			return ts.CloseWrite(nil)
		},
		func() {
			ts.Cancel()
			c.conn.SetDeadline(time.Unix(1, 0))
		})
	if err != nil {
		ex.finish(http.StatusSwitchingProtocols, Cut, nil)
		if c.o.Logger != nil {
			c.o.Logger.Debug("switched connection cut", "protocol", h.Upgrade, "error", err)
		}
	} else {
		ex.finish(http.StatusSwitchingProtocols, Completed, nil)
	}
	// Both directions are over (or were cut): nothing is left to linger
	// for.
	c.gone = true
	return nil
}

// switched completes a WebSocket upgrade on the server side once the
// origin answered 101: the stream gets a 200 with the origin's fields
// (RFC 9220: a 2xx accepts the extended CONNECT), then the origin
// connection and the stream are spliced until both directions end. The
// origin connection is closed afterwards, never pooled.
func (x *serverExchange) switched(oc *originConn, resp *httpio.Response) {
	k, h := &x.k, x.h
	defer oc.close()
	// The upstream timeout bounded the wait for the answer, not the life
	// of the new protocol.
	oc.conn.SetReadDeadline(time.Time{})
	fields := RemoveHopByHop(resp.Header.Clone())
	if err := k.s.WriteHead(&h3.Head{Status: http.StatusOK, Fields: fields, ContentLength: -1}); err != nil {
		k.reset(err)
		return
	}
	k.cur = &Head{Status: http.StatusSwitchingProtocols, ex: h.ex}
	err := splice(
		func() error { // origin -> stream, on the handler's goroutine (the response side)
			if err := copyRaw(oc.r, k.data, func(int) {}); err != nil {
				return err
			}
			return k.s.Close()
		},
		func() error { // stream -> origin (the request side)
			err := copyFrames(x.s, oc.conn, h.ex.addRequest)
			x.bodyRead = err == nil
			if err != nil {
				return err
			}
			return closeWrite(oc.conn)
		},
		func() {
			x.s.StopReading()
			oc.conn.SetDeadline(time.Unix(1, 0))
		})
	if err != nil {
		k.reset(err)
		return
	}
	k.ended = true
	h.ex.finish(http.StatusSwitchingProtocols, Completed, nil)
}
