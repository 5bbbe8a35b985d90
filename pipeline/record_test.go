package pipeline

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
)

// recorder is an Observer keeping every finished Record.
type recorder struct {
	mu   sync.Mutex
	recs []Record
	done chan struct{} // receives one value per Finished
}

func newRecorder() *recorder { return &recorder{done: make(chan struct{}, 16)} }

func (r *recorder) Started(Side) {}
func (r *recorder) Finished(rec *Record) {
	r.mu.Lock()
	r.recs = append(r.recs, *rec)
	r.mu.Unlock()
	r.done <- struct{}{}
}

// last waits for the next Finished and returns its record.
func (r *recorder) last(t *testing.T) Record {
	t.Helper()
	waitFor(t, "exchange record", r.done)
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.recs[len(r.recs)-1]
}

// TestServerRecordsWhatCallerGot: the server side's record of each
// exchange says what went back over the tunnel: the origin's complete
// response, a synthetic 502 (with its reason), or a head and then a reset.
func TestServerRecordsWhatCallerGot(t *testing.T) {
	for _, tc := range []struct {
		name    string
		script  func(c net.Conn)
		outcome Outcome
	}{
		{"complete", func(c net.Conn) { io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok") }, Completed},
		{"close mid-head", func(c net.Conn) { io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-") }, Synthetic},
		{"close mid-body", func(c net.Conn) { io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc") }, Cut},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := startScriptOrigin(t, func(o *scriptOrigin, n int, c net.Conn, br *bufio.Reader) {
				if _, _, err := o.read(br); err != nil {
					return
				}
				tc.script(c)
			})
			obs := newRecorder()
			h, pool := newTestHandler(o.ln.Addr().String(), func(so *ServerOptions) { so.Observer = obs })
			defer pool.Close()
			r := get(t, h, "/x")
			rec := obs.last(t)
			if rec.Outcome != tc.outcome || rec.Status != r.status || rec.Side != ServerSide {
				t.Fatalf("record %v %d, caller got %d (reset %v); want outcome %v", rec.Outcome, rec.Status, r.status, r.reset, tc.outcome)
			}
			if (rec.Outcome == Synthetic) != (rec.Err != nil) {
				t.Fatalf("outcome %v with error %v", rec.Outcome, rec.Err)
			}
			if rec.ResponseBytes != int64(len(r.body)) {
				t.Fatalf("record counts %d response bytes, caller got %d", rec.ResponseBytes, len(r.body))
			}
		})
	}
}

// TestClientRecordsWhatCallerGot: the same on the client side, where the
// caller is an HTTP/1.1 connection.
func TestClientRecordsWhatCallerGot(t *testing.T) {
	for _, tc := range []struct {
		name    string
		tunnel  tunnelFunc
		status  int
		outcome Outcome
	}{
		{"complete", func(*http.Request) (*http.Response, error) { return textResponse(200, "ok"), nil }, 200, Completed},
		{"tunnel down", func(*http.Request) (*http.Response, error) {
			return nil, fmt.Errorf("%w: no session", ErrTunnelDown)
		}, 503, Synthetic},
		{"cut body", func(*http.Request) (*http.Response, error) {
			return &http.Response{StatusCode: 200, Header: http.Header{}, ContentLength: -1,
				Body: io.NopCloser(&errReader{data: "partial"})}, nil
		}, 200, Cut},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obs := newRecorder()
			addr := startClientWith(t, &ClientOptions{Tunnel: tc.tunnel, Now: fixedNow, Observer: obs})
			_, br := dialRaw(t, addr, "GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
			resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
			if err != nil {
				t.Fatal(err)
			}
			body, berr := io.ReadAll(resp.Body)
			rec := obs.last(t)
			if resp.StatusCode != tc.status || rec.Status != tc.status || rec.Outcome != tc.outcome || rec.Side != ClientSide {
				t.Fatalf("caller got %d, record %d %v; want %d %v", resp.StatusCode, rec.Status, rec.Outcome, tc.status, tc.outcome)
			}
			if (berr != nil) != (tc.outcome == Cut) {
				t.Fatalf("caller's body error %v with outcome %v", berr, rec.Outcome)
			}
			if tc.outcome != Synthetic && rec.ResponseBytes != int64(len(body)) {
				t.Fatalf("record counts %d response bytes, caller got %d", rec.ResponseBytes, len(body))
			}
		})
	}
}
