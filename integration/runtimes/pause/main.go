// Command pause is the sandbox ("pause") image's only binary for the runtime tests: it
// holds a pod's namespaces open and exits on SIGINT or SIGTERM. It is built with
// CGO_ENABLED=0, so the image needs nothing else.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
}
