package pipeline

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/ptproxy/ptproxy/httpio"
)

func TestAppendForwarded(t *testing.T) {
	for _, tc := range []struct {
		name string
		peer Peer
		want string
	}{
		{"ipv4", Peer{For: "192.0.2.1:51234", By: "127.0.0.1:8080", Proto: "http"}, `for="192.0.2.1:51234";by="127.0.0.1:8080";proto=http`},
		{"ipv6", Peer{For: "[2001:db8::1]:8080", By: "[::]:20010", Proto: "http3"}, `for="[2001:db8::1]:8080";by="[::]:20010";proto=http3`},
		{"ipv6 zone", Peer{For: "[fe80::1%eth0]:443", By: "[::1]:443", Proto: "http3"}, `for="[fe80::1]:443";by="[::1]:443";proto=http3`},
		{"ipv4-mapped", Peer{For: "[::ffff:192.0.2.1]:80", By: "[::ffff:127.0.0.1]:8080", Proto: "http"}, `for="192.0.2.1:80";by="127.0.0.1:8080";proto=http`},
		{"no port ipv4", Peer{For: "192.0.2.1", By: "2001:db8::5", Proto: "http"}, `for=192.0.2.1;by="[2001:db8::5]";proto=http`},
		{"bracketed no port", Peer{For: "[2001:db8::5]", By: "", Proto: "http"}, `for="[2001:db8::5]";by=unknown;proto=http`},
		{"unknown", Peer{For: "", By: "/run/ptproxy.sock", Proto: "http"}, `for=unknown;by=unknown;proto=http`},
		{"hostname", Peer{For: "localhost:80", By: "@", Proto: ""}, `for=unknown;by=unknown`},
		{"odd proto", Peer{For: "192.0.2.1:1", By: "192.0.2.2:2", Proto: `a b"`}, `for="192.0.2.1:1";by="192.0.2.2:2";proto="a b\""`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := AppendForwarded(nil, tc.peer)
			if len(h) != 1 || h[0].Name != "Forwarded" || h[0].Value != tc.want {
				t.Fatalf("got %q, want Forwarded: %s", h, tc.want)
			}
		})
	}
}

func TestAppendForwardedAfterExisting(t *testing.T) {
	in := httpio.Header{
		{Name: "A", Value: "1"},
		{Name: "forwarded", Value: "for=192.0.2.43"},
		{Name: "B", Value: "2"},
		{Name: "Forwarded", Value: `for="garbage;`},
		{Name: "C", Value: "3"},
	}
	orig := in.Clone()
	got := AppendForwarded(in, Peer{For: "192.0.2.1:1", By: "192.0.2.2:2", Proto: "http"})
	want := httpio.Header{
		{Name: "A", Value: "1"},
		{Name: "forwarded", Value: "for=192.0.2.43"},
		{Name: "B", Value: "2"},
		{Name: "Forwarded", Value: `for="garbage;`},
		{Name: "Forwarded", Value: `for="192.0.2.1:1";by="192.0.2.2:2";proto=http`},
		{Name: "C", Value: "3"},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	if !slices.Equal(in, orig) {
		t.Fatalf("input modified: %q", in)
	}
}

func TestRemoveHopByHop(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      httpio.Header
		want    httpio.Header
		comment string
	}{
		{
			name: "list",
			in: httpio.Header{
				{Name: "Connection", Value: "keep-alive"}, {Name: "Keep-Alive", Value: "timeout=5"},
				{Name: "Proxy-Connection", Value: "x"}, {Name: "TE", Value: "trailers"},
				{Name: "Transfer-Encoding", Value: "chunked"}, {Name: "Trailer", Value: "X"},
				{Name: "Upgrade", Value: "h2c"}, {Name: "Proxy-Authenticate", Value: "Basic"},
				{Name: "Proxy-Authorization", Value: "Basic x"}, {Name: "X-Keep", Value: "1"},
			},
			want: httpio.Header{{Name: "X-Keep", Value: "1"}},
		},
		{
			name: "connection tokens",
			in: httpio.Header{
				{Name: "x-foo", Value: "1"}, {Name: "Connection", Value: "close, X-Foo"},
				{Name: "X-Bar", Value: "2"}, {Name: "connection", Value: " ,x-bar,, "}, {Name: "X-Baz", Value: "3"},
				{Name: "Close", Value: "not named by the close token"},
			},
			want: httpio.Header{{Name: "X-Baz", Value: "3"}, {Name: "Close", Value: "not named by the close token"}},
		},
		{
			name: "end-to-end untouched",
			in:   httpio.Header{{Name: "Host", Value: "h"}, {Name: "Content-Length", Value: "3"}, {Name: "A", Value: "1"}, {Name: "A", Value: "2"}},
			want: httpio.Header{{Name: "Host", Value: "h"}, {Name: "Content-Length", Value: "3"}, {Name: "A", Value: "1"}, {Name: "A", Value: "2"}},
		},
		{name: "nil", in: nil, want: httpio.Header{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := RemoveHopByHop(tc.in.Clone())
			if len(got) != len(tc.want) || len(got) > 0 && !slices.Equal(got, tc.want) {
				t.Fatalf("got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestNormalizeRequest(t *testing.T) {
	h := &Head{
		Method: "POST", Authority: "example.com", Path: "/",
		Header: httpio.Header{
			{Name: "Host", Value: "example.com"}, {Name: "Content-Length", Value: "3"},
			{Name: "Expect", Value: "100-continue"}, {Name: "Connection", Value: "X-A"}, {Name: "X-A", Value: "1"},
			{Name: "Accept", Value: "*/*"},
		},
		Peer: Peer{For: "192.0.2.1:5", By: "127.0.0.1:8080", Proto: "http"},
	}
	if err := Normalize(h, Policy{Side: ClientSide, AddForwarded: true}); err != nil {
		t.Fatal(err)
	}
	// Expect travels end to end (the origin answers 100 Continue).
	want := httpio.Header{{Name: "Expect", Value: "100-continue"}, {Name: "Accept", Value: "*/*"}, {Name: "Forwarded", Value: `for="192.0.2.1:5";by="127.0.0.1:8080";proto=http`}}
	if !slices.Equal(h.Header, want) {
		t.Fatalf("got %q\nwant %q", h.Header, want)
	}
}

func TestNormalizeRefuses(t *testing.T) {
	for _, tc := range []struct {
		h      *Head
		side   Side
		status int
	}{
		{&Head{Method: "CONNECT", Authority: "example.com:443", Path: "example.com:443"}, ServerSide, 405},
		{&Head{Method: "GET", Path: "/"}, ServerSide, 400},
		{&Head{Method: "GET", Path: "/"}, ClientSide, 400},
	} {
		err := Normalize(tc.h, Policy{Side: tc.side})
		if err == nil || err.Status != tc.status || err.Side != tc.side {
			t.Errorf("Normalize(%+v) = %v, want %d on %v", tc.h, err, tc.status, tc.side)
		}
	}
}

func TestNormalizeResponseHead(t *testing.T) {
	h := &Head{Status: 200, Header: httpio.Header{{Name: "Connection", Value: "X-A"}, {Name: "X-A", Value: "1"}, {Name: "X-B", Value: "2"}}}
	if err := Normalize(h, Policy{Side: ServerSide, AddForwarded: true}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(h.Header, httpio.Header{{Name: "X-B", Value: "2"}}) {
		t.Fatalf("got %q", h.Header)
	}
}

func TestNormalizeRequestHead(t *testing.T) {
	peer := Peer{For: "192.0.2.1:5", By: "127.0.0.1:8080", Proto: "http"}
	for _, tc := range []struct {
		name   string
		req    httpio.Request
		status int // refused with
		close  bool
	}{
		{name: "11", req: httpio.Request{Method: "GET", Host: "h", Path: "/", Major: 1, Minor: 1}},
		{name: "11 close", req: httpio.Request{Method: "GET", Host: "h", Path: "/", Major: 1, Minor: 1, Header: httpio.Header{{Name: "Connection", Value: "foo, Close"}}}, close: true},
		{name: "10", req: httpio.Request{Method: "GET", Host: "h", Path: "/", Major: 1, Minor: 0}, close: true},
		{name: "10 keep-alive", req: httpio.Request{Method: "GET", Host: "h", Path: "/", Major: 1, Minor: 0, Header: httpio.Header{{Name: "Connection", Value: "Keep-Alive"}}}},
		// RFC 9112 3.2: HTTP/1.0 may omit Host; it gets the address the
		// caller connected to (authority checked below).
		{name: "10 no host", req: httpio.Request{Method: "GET", Path: "/", Major: 1, Minor: 0}, close: true},
		{name: "connect", req: httpio.Request{Method: "CONNECT", Host: "h:443", Path: "h:443", Form: httpio.AuthorityForm, Major: 1, Minor: 1}, status: 405},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := RequestHead(&tc.req, peer)
			if tc.status != 0 {
				if err == nil || err.Status != tc.status || err.Side != ClientSide {
					t.Fatalf("got %v, want %d", err, tc.status)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			authority := tc.req.Host
			if authority == "" {
				authority = peer.By
			}
			if h.Close != tc.close || h.Authority != authority || h.Path != tc.req.Path || h.Peer != peer {
				t.Fatalf("got %+v", h)
			}
		})
	}
	if _, err := RequestHead(&httpio.Request{Method: "GET", Path: "/", Major: 1, Minor: 0}, Peer{}); err == nil || err.Status != 400 {
		t.Fatalf("HTTP/1.0 without Host and without a local address: got %v, want 400", err)
	}
	req := httpio.Request{Method: "POST", Host: "h", Path: "/", Major: 1, Minor: 1,
		Header: httpio.Header{{Name: "Trailer", Value: "X-A, x-b"}, {Name: "trailer", Value: "X-C,x-a"}}}
	h, _ := RequestHead(&req, peer)
	if !slices.Equal(h.Trailer, []string{"X-A", "x-b", "X-C"}) {
		t.Fatalf("trailer names %q", h.Trailer)
	}
	h.Header[0].Value = "changed"
	if req.Header[0].Value != "X-A, x-b" {
		t.Fatal("Head.Header shares the request's array")
	}
}

// runNormalizeStage feeds msgs through NormalizeStage and returns what
// came out.
func runNormalizeStage(t *testing.T, pol Policy, msgs ...Msg) []Msg {
	t.Helper()
	in := make(chan Msg, len(msgs))
	out := make(chan Msg, len(msgs)+1)
	for _, m := range msgs {
		in <- m
	}
	close(in)
	if err := NormalizeStage(pol)(t.Context(), in, out); err != nil {
		t.Fatal(err)
	}
	close(out)
	var got []Msg
	for m := range out {
		got = append(got, m)
	}
	return got
}

func chunkOf(s string) *Chunk {
	c := NewChunk()
	c.Data = append(c.Data, s...)
	return c
}

func TestNormalizeStagePassesThrough(t *testing.T) {
	h := &Head{Method: "POST", Authority: "example.com", Path: "/", Header: httpio.Header{{Name: "Keep-Alive", Value: "1"}, {Name: "A", Value: "1"}}}
	c := chunkOf("body")
	end := &End{}
	fail := &Fail{Err: NewError(KindUpstream, ClientSide, "x", nil)}
	got := runNormalizeStage(t, Policy{Side: ClientSide}, h, c, end, fail)
	if len(got) != 4 || got[0] != h || got[1] != c || got[2] != end || got[3] != fail {
		t.Fatalf("got %v", got)
	}
	if !slices.Equal(h.Header, httpio.Header{{Name: "A", Value: "1"}}) {
		t.Fatalf("head not normalized: %q", h.Header)
	}
	if string(c.Data) != "body" {
		t.Fatal("chunk touched")
	}
	c.Release()
}

func TestNormalizeStageFailReleasesExchange(t *testing.T) {
	bad := &Head{Method: "CONNECT", Authority: "x:443", Path: "x:443"}
	c1, c2 := chunkOf("one"), chunkOf("two")
	good := &Head{Method: "GET", Authority: "example.com", Path: "/next"}
	c3 := chunkOf("three")
	end1, end2 := &End{}, &End{}
	got := runNormalizeStage(t, Policy{Side: ServerSide}, bad, c1, c2, end1, good, c3, end2)
	if len(got) != 4 {
		t.Fatalf("got %d messages: %v", len(got), got)
	}
	f, ok := got[0].(*Fail)
	if !ok || f.Err.Kind != KindMethodNotAllowed || f.Err.Side != ServerSide {
		t.Fatalf("first message %#v, want a 405 Fail", got[0])
	}
	if got[1] != good || got[2] != c3 || got[3] != end2 {
		t.Fatalf("next exchange not forwarded: %v", got[1:])
	}
	if c1.Data != nil || c2.Data != nil {
		t.Fatal("body chunks of the refused exchange not released")
	}
	if string(c3.Data) != "three" {
		t.Fatal("chunk of the next exchange touched")
	}
	c3.Release()
}

func TestNormalizeStageStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancelCause(t.Context())
	cause := errors.New("stop")
	cancel(cause)
	in := make(chan Msg) // never delivers
	out := make(chan Msg)
	if err := NormalizeStage(Policy{})(ctx, in, out); !errors.Is(err, cause) {
		t.Fatalf("got %v, want the context's cause", err)
	}
}

func TestNormalizeStageInRun(t *testing.T) {
	var got []Msg
	src := func(ctx context.Context, _ <-chan Msg, out chan<- Msg) error {
		for _, m := range []Msg{
			&Head{Method: "GET", Path: "/"}, chunkOf("x"), &End{}, // no authority: refused
			&Head{Method: "GET", Authority: "h", Path: "/"}, &End{},
		} {
			if err := Send(ctx, out, m); err != nil {
				return err
			}
		}
		return nil
	}
	sink := func(ctx context.Context, in <-chan Msg, _ chan<- Msg) error {
		for m := range in {
			got = append(got, m)
		}
		return nil
	}
	if err := Run(t.Context(), src, NormalizeStage(Policy{Side: ClientSide}), sink); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("got %v", got)
	}
	if f, ok := got[0].(*Fail); !ok || f.Err.Status != 400 || f.Err.Msg != MsgHostRequired {
		t.Fatalf("got %#v", got[0])
	}
}
