package session

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/looplab/fsm"
)

// Transition describes one state change, as logged and as passed to the
// OnTransition hook of [ClientOptions] and [ServerOptions].
type Transition struct {
	From    State
	To      State
	Event   Event
	Reason  error         // nil when the transition has no cause worth reporting
	Peer    string        // peer_hostname of the session
	Attempt int           // client: attempt number (0 when not applicable)
	InState time.Duration // time spent in From
	At      time.Time
}

// machine wraps looplab/fsm behind typed states and events.
//
// Ownership: exactly one goroutine (the actor: the client's Run loop, or the
// server under its lifecycle mutex) calls fire. Callbacks only log and
// notify; side effects happen in the actor after fire returns. Other
// goroutines read the lock-free snapshot (state, since, lastErr), never the
// looplab FSM, whose Current takes a lock that callbacks hold.
type machine struct {
	f            *fsm.FSM
	log          *slog.Logger
	peer         string
	onTransition func(Transition)
	now          func() time.Time

	// attempt is set by the actor before firing; it is copied into the
	// transition record.
	attempt int

	state   atomic.Uint32
	since   atomic.Int64 // unix nanoseconds of the last transition
	lastErr atomic.Pointer[errBox]
}

type errBox struct{ err error }

// fireArgs is passed through looplab's variadic args to the callback.
type fireArgs struct {
	reason  error
	attempt int
}

func newMachine(log *slog.Logger, peer string, onTransition func(Transition)) *machine {
	if log == nil {
		log = slog.Default()
	}
	m := &machine{log: log, peer: peer, onTransition: onTransition, now: time.Now}
	m.f = newFSM(Idle, fsm.Callbacks{"enter_state": m.onEnter})
	m.state.Store(uint32(Idle))
	m.since.Store(m.now().UnixNano())
	return m
}

// newFSM builds a looplab FSM from [Transitions]; the table is the only
// source of its event list.
func newFSM(initial State, cb fsm.Callbacks) *fsm.FSM {
	events := make(fsm.Events, 0, len(Transitions))
	for _, t := range Transitions {
		// One EventDesc per edge: looplab keys its table by (event, src).
		events = append(events, fsm.EventDesc{Name: t.Event.String(), Src: []string{t.From.String()}, Dst: t.To.String()})
	}
	return fsm.NewFSM(initial.String(), events, cb)
}

// fire performs the transition for ev with reason as its cause. It returns
// an error (wrapping [ErrIllegalTransition]) when ev is not legal in the
// current state; the state is then unchanged.
func (m *machine) fire(ctx context.Context, ev Event, reason error) error {
	// looplab skips the transition when ctx is already cancelled, and we
	// often fire precisely because a context ended (stop on shutdown).
	ctx = context.WithoutCancel(ctx)
	err := m.f.Event(ctx, ev.String(), fireArgs{reason: reason, attempt: m.attempt})
	if err == nil {
		return nil
	}
	// The table has no self-loops, so looplab's NoTransitionError cannot
	// occur; InvalidEventError is the only expected failure.
	return fmt.Errorf("%w: %s in state %s (%v)", ErrIllegalTransition, ev, m.State(), err)
}

// onEnter is the only looplab callback: it updates the snapshot, logs the
// transition once, and calls the hook.
func (m *machine) onEnter(_ context.Context, e *fsm.Event) {
	var args fireArgs
	if len(e.Args) > 0 {
		args, _ = e.Args[0].(fireArgs)
	}
	from, to, ev := parseState(e.Src), parseState(e.Dst), parseEvent(e.Event)
	now := m.now()
	prev := time.Unix(0, m.since.Load())
	inState := now.Sub(prev)

	switch {
	case (ev == EvFail || ev == EvLost) && args.reason != nil:
		m.lastErr.Store(&errBox{args.reason})
	case to == Ready:
		m.lastErr.Store(nil)
	}
	m.since.Store(now.UnixNano())
	m.state.Store(uint32(to))

	level := slog.LevelInfo
	if ev == EvFail || ev == EvLost {
		level = slog.LevelWarn
	}
	attrs := []slog.Attr{
		slog.String(KeyFrom, from.String()),
		slog.String(KeyTo, to.String()),
		slog.String(KeyEvent, ev.String()),
	}
	if args.reason != nil {
		attrs = append(attrs, slog.String(KeyReason, args.reason.Error()))
	}
	if m.peer != "" {
		attrs = append(attrs, slog.String(KeyPeer, m.peer))
	}
	attrs = append(attrs, slog.Int64(KeyInStateMS, inState.Milliseconds()))
	if args.attempt > 0 {
		attrs = append(attrs, slog.Int(KeyAttempt, args.attempt))
	}
	m.log.LogAttrs(context.Background(), level, "session "+to.String(), attrs...)

	if m.onTransition != nil {
		m.onTransition(Transition{
			From: from, To: to, Event: ev, Reason: args.reason, Peer: m.peer,
			Attempt: args.attempt, InState: inState, At: now,
		})
	}
}

// State returns the current state (lock-free snapshot).
func (m *machine) State() State { return State(m.state.Load()) }

// Since returns when the current state was entered.
func (m *machine) Since() time.Time { return time.Unix(0, m.since.Load()) }

// LastError returns the reason of the latest fail or lost transition, or nil
// once a session is ready again.
func (m *machine) LastError() error {
	if b := m.lastErr.Load(); b != nil {
		return b.err
	}
	return nil
}

func parseState(s string) State {
	for _, st := range States() {
		if st.String() == s {
			return st
		}
	}
	panic("session: unknown state " + s)
}

func parseEvent(s string) Event {
	for _, ev := range Events() {
		if ev.String() == s {
			return ev
		}
	}
	panic("session: unknown event " + s)
}
