package pipeline

import "context"

// Recv takes the next message from in. ok is false when in is closed and
// drained or ctx is done.
func Recv(ctx context.Context, in <-chan Msg) (m Msg, ok bool) {
	select {
	case m, ok = <-in:
		return m, ok
	case <-ctx.Done():
		return nil, false
	}
}

// drainExchange releases messages from in up to and including the next
// *End, for an exchange whose body nobody will read. It reports whether the
// *End was reached.
func drainExchange(ctx context.Context, in <-chan Msg) bool {
	for {
		m, ok := Recv(ctx, in)
		if !ok {
			return false
		}
		Release(m)
		if _, end := m.(*End); end {
			return true
		}
	}
}
