package app

import (
	"flag"
	"fmt"
	"io"
	"path/filepath"

	"github.com/ptproxy/ptproxy/session/pki"
)

// runCerts writes a CA and one client and one server certificate for a real
// deployment, named as mkcert names them in ptproxy's README.
func runCerts(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ptproxy certs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", ".", "folder to write the files into (created if missing; existing files are never overwritten)")
	client := fs.String("client", "", "name (DNS name or IP) of the client-mode host: its certificate is issued for clientAuth")
	server := fs.String("server", "", "name (DNS name or IP) of the server-mode host: its certificate is issued for serverAuth")
	caKey := fs.Bool("ca-key", false, "also write ca-key.pem, to issue more certificates later")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: ptproxy certs --client foo.example.org --server bar.example.org [--dir DIR] [--ca-key]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *client == "" || *server == "" {
		fs.Usage()
		return exitUsage
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "failed at writing certificates: %v\n", err)
		return ExitFatal
	}
	ca, err := pki.NewCA("ptproxy CA")
	if err != nil {
		return fail(err)
	}
	cl, err := ca.Client(*client)
	if err != nil {
		return fail(err)
	}
	sv, err := ca.Server(*server)
	if err != nil {
		return fail(err)
	}
	clientName, serverName := *client+"-client", *server
	if err := pki.WriteFiles(*dir, ca, map[string]*pki.Leaf{clientName: cl, serverName: sv}); err != nil {
		return fail(err)
	}
	if *caKey {
		if err := pki.WriteCAKey(filepath.Join(*dir, "ca-key.pem"), ca); err != nil {
			return fail(err)
		}
	}
	fmt.Fprintf(stdout, `wrote to %s:
  ca.pem                      CA certificate: [tls] ca on both ends
  %-27s client certificate: [tls] cert on the client end (peer_hostname there = %q)
  %-27s its key: [tls] key on the client end
  %-27s server certificate: [tls] cert on the server end (peer_hostname there = %q)
  %-27s its key: [tls] key on the server end
`, *dir, clientName+".pem", *server, clientName+"-key.pem", serverName+".pem", *client, serverName+"-key.pem")
	return ExitOK
}
