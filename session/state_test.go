package session

import (
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/looplab/fsm"
)

var update = flag.Bool("update", false, "rewrite the generated diagram in docs/session.md")

// machineIn returns a machine forced into state s (test only).
func machineIn(s State, log *logBuf) *machine {
	var m *machine
	if log != nil {
		m = newMachine(slogJSON(log), "peer.test", nil)
	} else {
		m = newMachine(discard(), "peer.test", nil)
	}
	m.f.SetState(s.String())
	m.state.Store(uint32(s))
	return m
}

func TestTransitionTableEveryPair(t *testing.T) {
	legal := map[[2]int]State{}
	for _, e := range Transitions {
		k := [2]int{int(e.From), int(e.Event)}
		if _, dup := legal[k]; dup {
			t.Fatalf("duplicate edge %v", e)
		}
		legal[k] = e.To
	}
	for _, s := range States() {
		for _, ev := range Events() {
			want, ok := legal[[2]int{int(s), int(ev)}]
			next, nok := Next(s, ev)
			if ok != nok || (ok && next != want) {
				t.Errorf("Next(%s,%s) = %s,%v; table says %s,%v", s, ev, next, nok, want, ok)
			}
			m := machineIn(s, nil)
			err := m.fire(context.Background(), ev, nil)
			switch {
			case ok && err != nil:
				t.Errorf("%s --%s--> should be legal: %v", s, ev, err)
			case ok && m.State() != want:
				t.Errorf("%s --%s--> %s, want %s", s, ev, m.State(), want)
			case ok && m.f.Current() != want.String():
				t.Errorf("looplab state %s, want %s", m.f.Current(), want)
			case !ok && !errors.Is(err, ErrIllegalTransition):
				t.Errorf("%s --%s--> should be illegal, got err=%v", s, ev, err)
			case !ok && m.State() != s:
				t.Errorf("illegal %s --%s-- changed state to %s", s, ev, m.State())
			}
		}
	}
	// Stopped is terminal.
	for _, ev := range Events() {
		if _, ok := Next(Stopped, ev); ok {
			t.Errorf("stopped has an outgoing edge on %s", ev)
		}
	}
}

func TestFireWithCancelledContextStillTransitions(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	m := machineIn(Ready, nil)
	if err := m.fire(ctx, EvStop, context.Canceled); err != nil {
		t.Fatal(err)
	}
	if m.State() != Stopped {
		t.Fatalf("state %s, want stopped", m.State())
	}
}

func TestTransitionLogAndHook(t *testing.T) {
	var buf logBuf
	var got []Transition
	m := newMachine(slogJSON(&buf), "peer.test", func(tr Transition) { got = append(got, tr) })
	m.attempt = 3
	m.fire(context.Background(), EvDial, nil)
	reason := errors.New("boom")
	m.fire(context.Background(), EvFail, reason)
	if !errors.Is(m.LastError(), reason) {
		t.Fatalf("LastError = %v", m.LastError())
	}
	m.attempt = 0
	m.fire(context.Background(), EvDial, nil)
	m.fire(context.Background(), EvEstablished, nil)
	if m.LastError() != nil {
		t.Fatalf("LastError after ready = %v", m.LastError())
	}
	if m.Since().After(time.Now()) {
		t.Fatal("Since in the future")
	}

	recs := buf.records()
	if len(recs) != 4 || len(got) != 4 {
		t.Fatalf("want 4 log records and hooks, got %d, %d:\n%v", len(recs), len(got), recs)
	}
	r := recs[1]
	for k, want := range map[string]any{
		KeyFrom: "connecting", KeyTo: "idle", KeyEvent: "fail", KeyReason: "boom",
		KeyPeer: "peer.test", KeyAttempt: float64(3), "level": "WARN",
	} {
		if r[k] != want {
			t.Errorf("record %v: %s = %v, want %v", r, k, r[k], want)
		}
	}
	if _, ok := r[KeyInStateMS]; !ok {
		t.Errorf("record lacks %s: %v", KeyInStateMS, r)
	}
	if recs[0]["level"] != "INFO" || recs[3]["level"] != "INFO" {
		t.Errorf("dial/established should log at INFO: %v", recs)
	}
	if _, ok := recs[3][KeyAttempt]; ok {
		t.Errorf("attempt 0 should be omitted: %v", recs[3])
	}
	if got[1].From != Connecting || got[1].To != Idle || got[1].Event != EvFail || got[1].Reason != reason || got[1].Attempt != 3 {
		t.Errorf("hook got %+v", got[1])
	}
}

func TestStringers(t *testing.T) {
	for _, s := range States() {
		if strings.HasPrefix(s.String(), "State(") {
			t.Errorf("state %d has no name", s)
		}
	}
	for _, e := range Events() {
		if strings.HasPrefix(e.String(), "Event(") {
			t.Errorf("event %d has no name", e)
		}
	}
	if State(99).String() != "State(99)" || Event(99).String() != "Event(99)" {
		t.Error("unknown values")
	}
}

const (
	diagramBegin = "<!-- BEGIN GENERATED FSM (go test ./session -run TestDiagram -update) -->"
	diagramEnd   = "<!-- END GENERATED FSM -->"
)

// TestDiagram checks that the mermaid diagram in docs/session.md is the one
// looplab's visualiser draws from the transition table.
func TestDiagram(t *testing.T) {
	d, err := fsm.VisualizeForMermaidWithGraphType(newFSM(Idle, nil), fsm.StateDiagram)
	if err != nil {
		t.Fatal(err)
	}
	block := diagramBegin + "\n```mermaid\n" + d + "```\n" + diagramEnd
	path := filepath.Join("..", "docs", "session.md")
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(doc)
	i, j := strings.Index(s, diagramBegin), strings.Index(s, diagramEnd)
	if i < 0 || j < i {
		t.Fatalf("%s lacks the generated-diagram markers", path)
	}
	cur := s[i : j+len(diagramEnd)]
	if cur == block {
		return
	}
	if !*update {
		t.Fatalf("%s diagram is stale; run go test ./session -run TestDiagram -update\nwant:\n%s", path, block)
	}
	if err := os.WriteFile(path, []byte(s[:i]+block+s[j+len(diagramEnd):]), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestBackoffSequence(t *testing.T) {
	b := newBackoff(1600 * time.Millisecond)
	j := 0.0
	b.jitter = func() float64 { return j }
	want := []time.Duration{100, 200, 400, 800, 1600, 1600, 1600}
	for i, w := range want {
		if got := b.next(); got != w*time.Millisecond {
			t.Errorf("step %d: %v, want %v", i, got, w*time.Millisecond)
		}
	}
	b.reset()
	j = -1 // -10%
	if got := b.next(); got != 90*time.Millisecond {
		t.Errorf("jitter -1: %v, want 90ms", got)
	}
	j = 1 // +10%
	if got := b.next(); got != 220*time.Millisecond {
		t.Errorf("jitter +1: %v, want 220ms", got)
	}
	for range 10 {
		b.next()
	}
	if got := b.next(); got != 1600*time.Millisecond {
		t.Errorf("ceiling with +10%% jitter: %v, want capped 1600ms", got)
	}
	// Real jitter stays within ±10% and under the ceiling.
	r := newBackoff(time.Second)
	for i := range 50 {
		d := r.next()
		base := min(time.Second/16<<min(i, 5), time.Second)
		if d < base*9/10 || d > base*11/10 || d > time.Second {
			t.Fatalf("step %d: %v outside ±10%% of %v", i, d, base)
		}
	}
}

func TestQUICConfigMapping(t *testing.T) {
	tr := Transport{
		MaxIdleTimeout: 7 * time.Second, KeepAliveInterval: 3 * time.Second, MaxConcurrentStreams: 42,
		StreamReceiveWindow: 1_000_000, ReceiveWindow: 5_000_000, QlogDir: t.TempDir(),
	}
	s := QUICConfig(tr, true)
	if s.MaxIdleTimeout != 7*time.Second || s.HandshakeIdleTimeout != 7*time.Second {
		t.Errorf("timeouts: %v %v", s.MaxIdleTimeout, s.HandshakeIdleTimeout)
	}
	if s.KeepAlivePeriod != 3*time.Second {
		t.Errorf("KeepAlivePeriod %v", s.KeepAlivePeriod)
	}
	if s.MaxIncomingStreams != 42 {
		t.Errorf("server MaxIncomingStreams %d", s.MaxIncomingStreams)
	}
	if s.InitialStreamReceiveWindow != 1_000_000 || s.MaxStreamReceiveWindow != MaxStreamWindow {
		t.Errorf("stream windows %d %d", s.InitialStreamReceiveWindow, s.MaxStreamReceiveWindow)
	}
	if s.InitialConnectionReceiveWindow != 5_000_000 || s.MaxConnectionReceiveWindow != 5_000_000 {
		t.Errorf("conn windows %d %d", s.InitialConnectionReceiveWindow, s.MaxConnectionReceiveWindow)
	}
	if s.EnableDatagrams {
		t.Error("datagrams must be off")
	}
	if !s.Allow0RTT {
		t.Error("server must accept 0-RTT (the client only sends GET/HEAD early)")
	}
	if s.Tracer == nil {
		t.Error("QlogDir set but no Tracer")
	}
	c := QUICConfig(tr, false)
	if c.MaxIncomingStreams != -1 {
		t.Errorf("client MaxIncomingStreams %d, want -1", c.MaxIncomingStreams)
	}
	if c.Allow0RTT || c.EnableDatagrams {
		t.Error("client: Allow0RTT is a server setting; datagrams off")
	}
	// The client's attempt bound: connect_interval, at least 1 s, at most
	// max_idle_timeout.
	for _, tc := range []struct{ idle, interval, want time.Duration }{
		{7 * time.Second, time.Second, time.Second},
		{7 * time.Second, 3 * time.Second, 3 * time.Second},
		{7 * time.Second, 100 * time.Millisecond, time.Second},
		{2 * time.Second, 30 * time.Second, 2 * time.Second},
		{0, 30 * time.Second, 5 * time.Second},
	} {
		tt := tr
		tt.MaxIdleTimeout = tc.idle
		if got := clientQUICConfig(tt, tc.interval).HandshakeIdleTimeout; got != tc.want {
			t.Errorf("idle %v interval %v: attempt bound %v, want %v", tc.idle, tc.interval, got, tc.want)
		}
	}
	if z := QUICConfig(Transport{}, false); z.Tracer != nil || z.InitialStreamReceiveWindow != 0 {
		t.Error("zero Transport should leave quic-go defaults")
	}
}
