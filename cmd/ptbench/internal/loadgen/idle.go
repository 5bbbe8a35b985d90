package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"
)

// OpenIdle opens n keep-alive connections with dial, sends req once on each
// (so that the connection is established end to end, through whatever
// proxies lie behind the listener) and returns them open and idle. At most
// parallel connections are being opened at a time; each dial and request is
// bounded by perTry. It returns the connections it could open and, when
// fewer than n, the first error met; the caller closes them.
func OpenIdle(ctx context.Context, dial DialFunc, req Request, n, parallel int, perTry time.Duration, expectBytes int64) ([]*Conn, error) {
	req.Prepare()
	if parallel < 1 {
		parallel = 1
	}
	var (
		mu       sync.Mutex
		conns    []*Conn
		firstErr error
		wg       sync.WaitGroup
	)
	next := make(chan struct{})
	go func() {
		defer close(next)
		for range n {
			select {
			case next <- struct{}{}:
			case <-ctx.Done():
				return
			}
		}
	}()
	openOne := func() (*Conn, error) {
		dctx, cancel := context.WithTimeout(ctx, perTry)
		defer cancel()
		nc, err := dial(dctx)
		if err != nil {
			return nil, err
		}
		nc.SetDeadline(time.Now().Add(perTry))
		c := NewConn(nc)
		st, got, err := c.Do(&req)
		if err == nil && (st != 200 || (expectBytes >= 0 && got != expectBytes)) {
			err = fmt.Errorf("status %d, %d body bytes", st, got)
		}
		if err == nil && !c.Reusable() {
			err = errors.New("the server closes the connection after the response")
		}
		if err != nil {
			nc.Close()
			return nil, err
		}
		nc.SetDeadline(time.Time{})
		return c, nil
	}
	for range parallel {
		wg.Go(func() {
			for range next {
				c, err := openOne()
				mu.Lock()
				if err != nil {
					if firstErr == nil {
						firstErr = err
					}
				} else {
					conns = append(conns, c)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(conns) < n {
		if firstErr == nil {
			firstErr = ctx.Err()
		}
		return conns, fmt.Errorf("opened %d of %d idle connections: %v", len(conns), n, firstErr)
	}
	return conns, nil
}

// CountOpen reports how many of conns are still open: no end of stream, no
// error and no unsolicited bytes from the server within wait. Every
// connection is checked at once, so the whole check takes about wait. A
// connection found closed or talking is closed; the others are left as
// they were (no byte is consumed from them).
func CountOpen(conns []*Conn, wait time.Duration) int {
	var (
		mu   sync.Mutex
		open int
		wg   sync.WaitGroup
	)
	for _, c := range conns {
		wg.Go(func() {
			c.c.SetReadDeadline(time.Now().Add(wait))
			_, err := c.br.Peek(1)
			c.c.SetReadDeadline(time.Time{})
			var ne net.Error
			if err != nil && (errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()) {
				mu.Lock()
				open++
				mu.Unlock()
				return
			}
			c.closed = true
			c.c.Close()
		})
	}
	wg.Wait()
	return open
}
