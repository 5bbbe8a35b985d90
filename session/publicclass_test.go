package session

import (
	"errors"
	"fmt"
	"testing"

	"github.com/quic-go/quic-go"
)

// TestNotReadyPublicClass: a caller answered 503 learns the class of the
// failure; addresses and TLS detail in the reason never reach it.
func TestNotReadyPublicClass(t *testing.T) {
	crypto := quic.TransportErrorCode(0x12a)
	cases := []struct {
		reason error
		want   string
	}{
		{nil, "first connection attempt in progress"},
		{errFirstAttempt, "first connection attempt in progress"},
		{fmt.Errorf("connecting to 10.1.2.3:4433: %w", &quic.TransportError{ErrorCode: crypto, ErrorMessage: "x509: certificate signed by unknown authority"}), "peer certificate refused"},
		{fmt.Errorf("connecting to 10.1.2.3:4433: %w", &quic.TransportError{ErrorCode: crypto, Remote: true}), "peer refused our certificate"},
		{fmt.Errorf("connecting to 10.1.2.3:4433: %w", &quic.HandshakeTimeoutError{}), "peer did not answer"},
		{&quic.IdleTimeoutError{}, "peer did not answer"},
		{&quic.StatelessResetError{}, "peer lost the session"},
		{ErrServerGoaway, "peer is restarting or shutting down"},
		{ErrServerClosed, "peer is restarting or shutting down"},
		{&quic.ApplicationError{ErrorCode: 0x10c, Remote: true}, "peer closed the session"},
		{&quic.TransportError{ErrorCode: quic.ProtocolViolation, Remote: true}, "connection to peer failed"},
		{errors.New("dial udp 10.1.2.3:4433: network is unreachable"), "peer unreachable"},
	}
	for _, c := range cases {
		e := &NotReadyError{Reason: c.reason}
		if got := e.PublicClass(); got != c.want {
			t.Errorf("%v: class %q, want %q", c.reason, got, c.want)
		}
	}
}
