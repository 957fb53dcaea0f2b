package main

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/moornet/moor/dns/records"
	"github.com/moornet/moor/dns/server"
	"github.com/moornet/moor/plugins"
	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/netnsid"
	"github.com/moornet/moor/plugins/statefs"
)

// EnvFirewallRepair set to "off" in the plugin's environment makes firewallRepair default
// to false (test harnesses that plant firewall drift on purpose; hosts that keep their
// DNS sidecar at CAP_NET_BIND_SERVICE alone).
const EnvFirewallRepair = "MOOR_FIREWALL_REPAIR"

// defaultWait bounds how long ADD waits for the sidecar to answer the new name.
const defaultWait = 3 * time.Second

// conf is moor-dns's plugin config. Every path defaults to the sidecar paths of the network
// namespace the plugin runs in (server.PathsFor: the historical /run/moor paths for the
// machine's own namespace, /run/moor/netns/<dev>-<ino>/ for any other, both under
// MOOR_RUN_DIR when that is set); tests and multi-host labs may set their own.
type conf struct {
	plugins.NetConf

	// Domain is the network's search domain (server.DefaultDomain when empty).
	Domain string `json:"domain,omitempty"`
	// Internal networks never forward queries out (set it with the driver's internal).
	Internal bool `json:"internal,omitempty"`
	// Upstreams override the host's resolvers for this network ("ip" or "ip:port").
	Upstreams []string `json:"upstreams,omitempty"`

	StoreDir      string `json:"storeDir,omitempty"`
	ControlSocket string `json:"controlSocket,omitempty"`
	PidFile       string `json:"pidFile,omitempty"`
	Port          int    `json:"port,omitempty"` // server.DefaultPort
	// IdleTimeout is how long the sidecar outlives the last record ("30s"; negative: forever).
	IdleTimeout string `json:"idleTimeout,omitempty"`
	// WaitTimeout bounds the wait for the sidecar's first answer on ADD ("3s").
	WaitTimeout string `json:"waitTimeout,omitempty"`
	// KeepPrivileges keeps the sidecar's capabilities (for debugging).
	KeepPrivileges bool `json:"keepPrivileges,omitempty"`
	// FirewallRepair, true when unset, makes the sidecar it starts repair moor's firewall
	// rules of its namespace after a firewall reload (server.Options.FirewallRepair); false
	// starts a sidecar that keeps CAP_NET_BIND_SERVICE alone. It applies when this ADD
	// starts the sidecar.
	FirewallRepair *bool `json:"firewallRepair,omitempty"`

	// runDir is the run directory of the firewall's State and lock (MOOR_RUN_DIR).
	runDir string

	idle, wait time.Duration
	// netns is the identity of the namespace the plugin runs in: the only one whose
	// sidecar it talks to.
	netns netnsid.ID
}

func loadConf(call *plugins.Call) (*conf, error) {
	paths, id, err := server.PathsOf(call.Getenv(server.RunDirEnv))
	if err != nil {
		return nil, codes.Wrap(codes.InvalidEnvironment, "identifying the plugin's network namespace", err)
	}
	c := &conf{
		StoreDir:      paths.StoreDir,
		ControlSocket: paths.ControlSocket,
		PidFile:       paths.PidFile,
		Port:          server.DefaultPort,
		Domain:        server.DefaultDomain,
		netns:         id,
		runDir:        statefs.RunDir(call.Getenv),
	}
	if call.Getenv(EnvFirewallRepair) == "off" {
		off := false
		c.FirewallRepair = &off
	}
	if err := plugins.LoadConf(call, c); err != nil {
		return nil, err
	}
	return c, nil
}

// Validate checks the fields the plugin reads itself; the sidecar checks the rest.
func (c *conf) Validate(*plugins.Call) error {
	if c.Port < 1 || c.Port > 65535 {
		return plugins.InvalidField("port", c.Port, "must be between 1 and 65535")
	}
	if err := records.ValidName(c.Domain); err != nil {
		return plugins.InvalidField("domain", c.Domain, err.Error())
	}
	// The plugin runs in the runtime's working directory and the sidecar it starts in
	// another: a relative path would name different files in each.
	for _, p := range []struct{ field, value string }{{"storeDir", c.StoreDir}, {"controlSocket", c.ControlSocket}, {"pidFile", c.PidFile}} {
		if !filepath.IsAbs(p.value) {
			return plugins.InvalidField(p.field, p.value, "must be an absolute path")
		}
	}
	for i, u := range c.Upstreams {
		if _, err := records.NormalizeUpstream(u); err != nil {
			return plugins.InvalidField(fmt.Sprintf("upstreams[%d]", i), u, "must be an IP address, optionally with :port")
		}
	}
	var err error
	if c.idle, err = parseDuration("idleTimeout", c.IdleTimeout, server.DefaultIdleTimeout); err != nil {
		return err
	}
	if c.wait, err = parseDuration("waitTimeout", c.WaitTimeout, defaultWait); err != nil {
		return err
	}
	if c.wait <= 0 {
		return plugins.InvalidField("waitTimeout", c.WaitTimeout, "must be positive")
	}
	return nil
}

func parseDuration(field, v string, def time.Duration) (time.Duration, error) {
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, plugins.InvalidField(field, v, `must be a duration such as "30s"`)
	}
	return d, nil
}
