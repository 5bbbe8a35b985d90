package repocheck

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/ptproxy/ptproxy"

// importRules: for each package, the module-internal and third-party import
// prefixes it may use (besides the standard library). They keep the layers
// honest: the HTTP/1.1 codec knows nothing else, the pipeline knows no QUIC
// or configuration, the session knows no HTTP/1.1.
var importRules = map[string][]string{
	module + "/httpio":    {},
	module + "/httpio/h3": {module + "/httpio", "github.com/quic-go/qpack"},
	module + "/config":    {"github.com/knadh/koanf", "github.com/go-viper/mapstructure"},
	module + "/pipeline":  {module + "/httpio"},
	module + "/session":   {"github.com/quic-go/", "github.com/looplab/fsm", "golang.org/x/", module + "/session/fec", module + "/httpio"},
	// The FEC layer is a net.PacketConn: it knows no QUIC, only datagrams
	// and the socket calls of the fast paths it offers quic-go (recvmmsg
	// through x/net/ipv4, UDP_SEGMENT and control messages through x/sys).
	module + "/session/fec": {"github.com/klauspost/reedsolomon", "golang.org/x/net/ipv4", "golang.org/x/sys/unix"},
}

func TestImportRules(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, module+"/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	seen := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		allowed, ok := importRules[f[0]]
		if !ok {
			continue
		}
		seen++
		for _, imp := range f[1:] {
			if !strings.Contains(strings.SplitN(imp, "/", 2)[0], ".") {
				continue // standard library
			}
			okImp := false
			for _, p := range allowed {
				if strings.HasPrefix(imp, p) {
					okImp = true
				}
			}
			if !okImp {
				t.Errorf("%s imports %s, which its layer must not", f[0], imp)
			}
		}
	}
	if seen != len(importRules) {
		t.Fatalf("checked %d of %d packages", seen, len(importRules))
	}
}
