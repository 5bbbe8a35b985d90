package config

import (
	"slices"
	"testing"
)

func TestChangedAndCopyKey(t *testing.T) {
	a, b := Defaults(), Defaults()
	if got := Changed(&a, &b); len(got) != 0 {
		t.Fatalf("defaults differ from themselves: %v", got)
	}
	b.General.HTTPConnectAddress = "127.0.0.1:9000"
	b.TLS.Cert = "new.pem"
	b.Transport.FECRepair = 3
	want := []string{"general.http_connect_address", "tls.cert", "transport.fec_repair"}
	if got := Changed(&a, &b); !slices.Equal(got, want) {
		t.Fatalf("Changed: %v, want %v", got, want)
	}
	if !CopyKey(&a, &b, "tls.cert") || a.TLS.Cert != "new.pem" {
		t.Fatalf("CopyKey did not copy tls.cert: %q", a.TLS.Cert)
	}
	if CopyKey(&a, &b, "tls.nope") {
		t.Fatal("CopyKey accepted an unknown key")
	}
	if got := Changed(&a, &b); !slices.Equal(got, []string{"general.http_connect_address", "transport.fec_repair"}) {
		t.Fatalf("after copying tls.cert: %v", got)
	}
}
