package translate

import (
	"fmt"
	"strings"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/moornet/moor/netavark/api"
)

// Status turns the CNI result of a setup into netavark's StatusBlock: the container's
// interface ifName with its MAC and addresses (each with its subnet's prefix length and
// the gateway), and the result's DNS: with moor-dns chained, the network's gateway as the
// name server and dns.moor as the search domain (podman writes both into the container's
// resolv.conf).
func Status(res *current.Result, ifName string) (api.StatusBlock, error) {
	st := api.StatusBlock{
		DNSSearchDomains: append([]string{}, res.DNS.Search...),
		DNSServerIPs:     append([]string{}, res.DNS.Nameservers...),
		Interfaces:       map[string]api.NetInterface{},
	}
	idx := -1
	for i, itf := range res.Interfaces {
		if itf.Name == ifName && itf.Sandbox != "" {
			idx = i
			break
		}
	}
	if idx < 0 {
		return st, fmt.Errorf("the CNI result names no interface %s in the container", ifName)
	}
	ni := api.NetInterface{MACAddress: strings.ToLower(res.Interfaces[idx].Mac), Subnets: []api.NetAddress{}}
	for _, ipc := range res.IPs {
		if ipc.Interface == nil || *ipc.Interface != idx {
			continue
		}
		a := api.NetAddress{IPNet: ipc.Address.String()}
		if ipc.Gateway != nil {
			a.Gateway = ipc.Gateway.String()
		}
		ni.Subnets = append(ni.Subnets, a)
	}
	st.Interfaces[ifName] = ni
	return st, nil
}
