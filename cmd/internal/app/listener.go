package app

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ptproxy/ptproxy/pipeline"
)

// httpListener accepts the callers' HTTP/1.1 connections (client mode) and
// runs one pipeline per connection. It owns every connection goroutine and
// waits for them in wait.
type httpListener struct {
	ln net.Listener
	// name is the listener's address as the configuration writes it
	// ([[routes]].listener refers to it); endpoint is where its requests
	// go when no route matches.
	name, endpoint string
	// router is the listener's: a reload sets its routes, which apply to
	// the next request of every connection.
	router *pipeline.Router
	// opts are the options of the connections accepted next; a reload
	// swaps them, and connections keep the ones they started with.
	opts    atomic.Pointer[pipeline.ClientOptions]
	noDelay bool
	maxConn int
	log     *slog.Logger

	wg sync.WaitGroup
}

// serve accepts until the listener is closed. ctx cancels the connections
// themselves (the second signal); closing the listener only stops accepting.
func (l *httpListener) serve(ctx context.Context) {
	var sem chan struct{}
	if l.maxConn > 0 {
		sem = make(chan struct{}, l.maxConn)
	}
	var delay time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Temporary failures (EMFILE and the like): back off briefly
			// instead of spinning, as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			l.log.Warn("accept failed", "error", err, "retry_in_ms", delay.Milliseconds())
			select {
			case <-time.After(delay):
				continue
			case <-ctx.Done():
				return
			}
		}
		delay = 0
		if sem != nil {
			select {
			case sem <- struct{}{}:
			default:
				// Over the limit: refuse at once rather than queue unbounded.
				l.log.Warn("connection refused: max_connections reached", "peer", c.RemoteAddr().String(), "max_connections", l.maxConn)
				c.Close()
				continue
			}
		}
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetNoDelay(l.noDelay)
		}
		l.wg.Go(func() {
			defer func() {
				if sem != nil {
					<-sem
				}
			}()
			pipeline.ServeClientConn(ctx, c, l.opts.Load())
		})
	}
}

// wait blocks until every connection has finished.
func (l *httpListener) wait() { l.wg.Wait() }
