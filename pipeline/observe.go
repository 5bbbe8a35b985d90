package pipeline

import (
	"sync/atomic"
	"time"
)

// Observer is told about every exchange, for metrics and access logs. Its
// methods are called from the exchanges' goroutines and must not block.
type Observer interface {
	// Started is called when a request head was read (or rejected).
	Started(side Side)
	// Finished is called exactly once per started exchange.
	Finished(rec *Record)
}

// Outcome is how an exchange ended.
type Outcome uint8

const (
	Completed Outcome = iota // the response was delivered whole
	Synthetic                // ptproxy answered itself (Record.Err says why)
	Cut                      // the response was cut short after its head
	Aborted                  // the caller or the stream went away before a response
)

func (o Outcome) String() string {
	switch o {
	case Completed:
		return "completed"
	case Synthetic:
		return "synthetic"
	case Cut:
		return "cut"
	default:
		return "aborted"
	}
}

// Record describes one finished exchange.
type Record struct {
	Side      Side
	Method    string // "" when the request could not be parsed
	Authority string
	Path      string
	Peer      string // the caller (client side) or the client ptproxy (server side)
	Status    int    // status sent, 0 if none
	Outcome   Outcome
	Err       *Error // set for Synthetic
	Duration  time.Duration
	// Body bytes read from the caller and written back to it.
	RequestBytes, ResponseBytes int64
}

// exchange tracks one request from its source to its sink. The source
// creates it; the response head carries it to the sink, which finishes it.
// Whoever runs the exchange finishes it as Aborted if nothing else did, so
// an exchange is reported exactly once even when the connection dies
// midway.
type exchange struct {
	obs   Observer
	start time.Time
	rec   Record
	req   atomic.Int64 // request body bytes, added by the source
	resp  atomic.Int64 // response body bytes, added by the sink
	// finished makes finish report once, whichever path gets there
	// first.
	finished atomic.Bool
}

func startExchange(obs Observer, side Side, h *Head, peer string) *exchange {
	if obs == nil {
		return nil
	}
	ex := &exchange{obs: obs, start: time.Now()}
	ex.rec.Side, ex.rec.Peer = side, peer
	if h != nil {
		ex.rec.Method, ex.rec.Authority, ex.rec.Path = h.Method, h.Authority, h.Path
	}
	obs.Started(side)
	return ex
}

// finish reports the exchange once; later calls do nothing.
func (ex *exchange) finish(status int, outcome Outcome, err *Error) {
	if ex == nil {
		return
	}
	if !ex.finished.CompareAndSwap(false, true) {
		return
	}
	ex.rec.Status, ex.rec.Outcome, ex.rec.Err = status, outcome, err
	ex.rec.Duration = time.Since(ex.start)
	ex.rec.RequestBytes, ex.rec.ResponseBytes = ex.req.Load(), ex.resp.Load()
	ex.obs.Finished(&ex.rec)
}

func (ex *exchange) addRequest(n int) {
	if ex != nil {
		ex.req.Add(int64(n))
	}
}

func (ex *exchange) addResponse(n int) {
	if ex != nil {
		ex.resp.Add(int64(n))
	}
}
