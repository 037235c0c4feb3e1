// Command coredns is CoreDNS with only the plugins a test cluster's DNS needs: the cluster's Service and Pod
// names from the API server (kubernetes), a cache and error logging. Nothing is forwarded off the machine.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/kubernetes"
)

// The plugins' order, as in CoreDNS's plugin.cfg.
func init() {
	dnsserver.Directives = []string{"errors", "cache", "kubernetes"}
}

func main() {
	coremain.Run()
}
