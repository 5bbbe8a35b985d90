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
// have returned. The last stage runs on the calling goroutine. The first
// error cancels the context every stage sees and is returned; messages left
// in channels are released.
//
// ptproxy's own exchanges do not run as stages (see docs/pipeline.md): a
// hand-off between goroutines costs a wake-up on the latency path. Run and
// the Msg types remain for pipelines assembled from separate stages, such
// as NormalizeStage in tests and tools.
func Run(ctx context.Context, stages ...Stage) error {
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

	var in chan Msg
	edges := make([]chan Msg, 0, len(stages))
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
