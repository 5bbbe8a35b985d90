package session

// Stable slog attribute keys of the operator log. They are part of the
// operator interface (docs/session.md): rename only with a changelog entry.
const (
	KeyFrom      = "from"        // state left
	KeyTo        = "to"          // state entered
	KeyEvent     = "event"       // event that caused the transition
	KeyReason    = "reason"      // error text that caused it, if any
	KeyPeer      = "peer"        // peer_hostname (client) / remote address (server conn logs)
	KeyInStateMS = "in_state_ms" // milliseconds spent in the state left
	KeyAttempt   = "attempt"     // client: attempt number since the last established session

	KeyRemoteAddr = "remote_addr" // server: remote UDP address of a connection or handshake
	KeyLocalAddr  = "local_addr"  // bound UDP address
	KeySubject    = "subject"     // server: client certificate subject of an accepted connection
	KeyIdentity   = "identity"    // server: the accepted client name (peer_hostname or one of peer_hostnames) the certificate matched
	KeyAddress    = "address"     // client: resolved address dialled
	KeyRequested  = "requested"   // socket buffer size asked for (bytes)
	KeyGranted    = "granted"     // socket buffer size the kernel reports granting (bytes, un-doubled)
	KeyBuffer     = "buffer"      // "receive" or "send"
	KeyError      = "error"       // generic error
	KeyResumed    = "resumed"     // server: the TLS session was resumed from a ticket
	KeyEarlyData  = "early_data"  // server: the client sent 0-RTT early data that was accepted
	KeyGSO        = "gso"         // server: quic-go sends with UDP generic segmentation offload on this connection
)
