// Command ptproxy is a point-to-point HTTP/1.1 reverse proxy that carries
// requests over one persistent, mutually-authenticated HTTP/3 session.
package main

import (
	"os"

	"github.com/ptproxy/ptproxy/cmd/internal/app"
)

func main() {
	os.Exit(app.Main(os.Args[1:], os.Stdout, os.Stderr))
}
