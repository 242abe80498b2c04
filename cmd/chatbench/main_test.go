package main

import (
	"os"
	"testing"
)

// TestMain lets the test binary be the NATS target's server: run
// re-executes its own executable as "serve-nats", which under go test is
// this binary.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == serveNATSCommand {
		os.Exit(serveNATS(os.Args[2:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}
