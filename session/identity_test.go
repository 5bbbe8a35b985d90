package session

import (
	"crypto/tls"
	"crypto/x509"
	"strings"
	"testing"

	"github.com/ptproxy/ptproxy/session/pki"
)

// TestPeerIdentities: the server accepts a client certificate matching any
// accepted name; the identity is the first name it matches, and a
// certificate matching none is refused naming every name.
func TestPeerIdentities(t *testing.T) {
	ca, err := pki.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"app.test", "ops.test"}
	verify := peerNameVerifier(names)
	for _, tc := range []struct {
		sans     []string
		identity string
	}{
		{[]string{"app.test"}, "app.test"},
		{[]string{"ops.test"}, "ops.test"},
		{[]string{"ops.test", "app.test"}, "app.test"},
		{[]string{"other.test"}, ""},
	} {
		leaf, err := ca.Client(tc.sans...)
		if err != nil {
			t.Fatal(err)
		}
		err = verify(tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf.Cert}})
		id, _ := PeerIdentity(leaf.Cert, names)
		if id != tc.identity || (err == nil) != (tc.identity != "") {
			t.Errorf("SANs %q: identity %q, verify %v; want %q", tc.sans, id, err, tc.identity)
		}
		if tc.identity == "" && !strings.Contains(err.Error(), `any of peer_hostname and peer_hostnames ["app.test" "ops.test"]`) {
			t.Errorf("refusal %q does not name the accepted names", err)
		}
	}
	// One name: the message is the original one.
	leaf, _ := ca.Client("other.test")
	if err := matchPeer(leaf.Cert, "app.test"); err == nil || !strings.Contains(err.Error(), `does not match peer_hostname "app.test"`) {
		t.Errorf("single-name refusal: %v", err)
	}
}
