package pipeline

import (
	"context"
	"errors"
	"sync"
)

// Stage is one step of an exchange. It receives from in (nil for a source)
// and sends to out (nil for a sink). A stage closes out when it returns,
// which tells the next stage that nothing more comes; it never closes in.
// A stage returns when in is closed and drained, when ctx is done, or on an
// error it cannot turn into a message.
type Stage func(ctx context.Context, in <-chan Msg, out chan<- Msg) error

// Depth is the capacity of every channel between two stages. Together with
// the chunk buffer size it bounds the body bytes buffered per edge, and so
// is the backpressure window.
const Depth = 4

// Run connects stages in order with bounded channels and runs them until all
// have returned. The last stage runs on the calling goroutine, so a handler
// that must write its own response (the HTTP/3 server side) can be the sink.
// The first error cancels the context every stage sees and is returned;
// messages left in channels are released.
func Run(ctx context.Context, stages ...Stage) error {
	return RunFrom(ctx, nil, stages...)
}

// RunFrom is Run with the first stage reading from src: messages a caller
// already has (a bodiless request's Head and End) need no source goroutine
// of their own. RunFrom releases what is left in src.
func RunFrom(ctx context.Context, src chan Msg, stages ...Stage) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	var (
		wg       sync.WaitGroup
		firstErr error
		once     sync.Once
	)
	fail := func(err error) {
		// A stage unblocked by the cancellation that follows the end (or
		// failure) of another reports that cancellation; it is not news.
		if err == nil || ctx.Err() != nil && errors.Is(err, context.Canceled) {
			return
		}
		once.Do(func() { firstErr = err })
		cancel(err)
	}

	in := src
	edges := make([]chan Msg, 0, len(stages)+1)
	if src != nil {
		edges = append(edges, src)
	}
	for i, st := range stages {
		var out chan Msg
		if i < len(stages)-1 {
			out = make(chan Msg, Depth)
			edges = append(edges, out)
		}
		stageIn, stageOut, stage := in, out, st
		run := func() {
			defer func() {
				if stageOut != nil {
					close(stageOut)
				}
			}()
			var sendOut chan<- Msg
			if stageOut != nil {
				sendOut = stageOut
			}
			fail(stage(ctx, stageIn, sendOut))
		}
		if i == len(stages)-1 {
			run()
		} else {
			wg.Go(run)
		}
		in = out
	}
	// A stage that stops early leaves its upstream blocked on a full channel;
	// cancelling unblocks it (stages select on ctx.Done when sending).
	cancel(nil)
	wg.Wait()
	for _, e := range edges {
		for m := range e {
			Release(m)
		}
	}
	return firstErr
}

// Send delivers m to out unless ctx ends first, in which case m is released
// and the context's cause returned.
func Send(ctx context.Context, out chan<- Msg, m Msg) error {
	select {
	case out <- m:
		return nil
	case <-ctx.Done():
		Release(m)
		return context.Cause(ctx)
	}
}

// Release returns pooled memory held by m.
func Release(m Msg) {
	if c, ok := m.(*Chunk); ok {
		c.Release()
	}
}

// prefilled returns a closed channel holding msgs, for RunFrom.
func prefilled(msgs ...Msg) chan Msg {
	ch := make(chan Msg, len(msgs))
	for _, m := range msgs {
		ch <- m
	}
	close(ch)
	return ch
}
