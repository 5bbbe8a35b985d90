package session

import "fmt"

// State is the lifecycle state of a session actor (client or server).
//
//	idle        no QUIC connection; the client waits for its next attempt,
//	            the server has not bound its socket yet
//	connecting  client only: resolving, dialling, TLS and HTTP/3 handshake
//	ready       client: a session is published and takes requests;
//	            server: the socket is bound and connections are accepted
//	draining    no new work is taken; in-flight requests finish
//	stopped     terminal: sockets closed, goroutines gone
//
// The legal next states of each state are exactly the rows of [Transitions].
// The numbering is stable (it is packed into an atomic snapshot).
type State uint32

const (
	Idle State = iota
	Connecting
	Ready
	Draining
	Stopped
)

var stateNames = [...]string{
	Idle:       "idle",
	Connecting: "connecting",
	Ready:      "ready",
	Draining:   "draining",
	Stopped:    "stopped",
}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", uint32(s))
}

// States lists every state in numeric order.
func States() []State { return []State{Idle, Connecting, Ready, Draining, Stopped} }

// Event is an input to the state machine.
type Event uint8

const (
	EvDial        Event = iota // client: start an attempt
	EvEstablished              // client: handshake and HTTP/3 setup done, session published
	EvFail                     // client: the attempt failed
	EvLost                     // client: the published session ended
	EvListen                   // server: socket bound, accepting
	EvDrain                    // stop taking new work, finish in-flight work
	EvStop                     // terminal; everything closed
)

var eventNames = [...]string{
	EvDial:        "dial",
	EvEstablished: "established",
	EvFail:        "fail",
	EvLost:        "lost",
	EvListen:      "listen",
	EvDrain:       "drain",
	EvStop:        "stop",
}

func (e Event) String() string {
	if int(e) < len(eventNames) {
		return eventNames[e]
	}
	return fmt.Sprintf("Event(%d)", uint8(e))
}

// Events lists every event in numeric order.
func Events() []Event {
	return []Event{EvDial, EvEstablished, EvFail, EvLost, EvListen, EvDrain, EvStop}
}

// Edge is one legal transition: From --Event--> To.
type Edge struct {
	From  State
	Event Event
	To    State
}

// Transitions is THE transition table. It is the only source of the
// looplab/fsm event list (see [newFSM]), of the transition unit test and of
// the mermaid diagram in docs/session.md. Any (state, event) pair not listed
// is illegal.
var Transitions = []Edge{
	{Idle, EvDial, Connecting},
	{Idle, EvListen, Ready},
	{Idle, EvDrain, Draining},
	{Idle, EvStop, Stopped},
	{Connecting, EvEstablished, Ready},
	{Connecting, EvFail, Idle},
	{Connecting, EvDrain, Draining},
	{Connecting, EvStop, Stopped},
	{Ready, EvLost, Idle},
	{Ready, EvDrain, Draining},
	{Ready, EvStop, Stopped},
	{Draining, EvStop, Stopped},
}

// Next returns the state reached from s on e, and whether that is legal.
func Next(s State, e Event) (State, bool) {
	for _, t := range Transitions {
		if t.From == s && t.Event == e {
			return t.To, true
		}
	}
	return s, false
}
