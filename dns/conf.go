package main

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/moornet/moor/dns/records"
	"github.com/moornet/moor/dns/server"
	"github.com/moornet/moor/plugins"
)

// defaultWait bounds how long ADD waits for the sidecar to answer the new name.
const defaultWait = 3 * time.Second

// conf is moor-dns's plugin config. Every path has the host-wide default; tests and
// multi-host labs (several "hosts" on one machine) give each host its own.
type conf struct {
	plugins.NetConf

	// Domain is the network's search domain (server.DefaultDomain when empty).
	Domain string `json:"domain,omitempty"`
	// Internal networks never forward queries out (set it with the driver's internal).
	Internal bool `json:"internal,omitempty"`
	// Upstreams override the host's resolvers for this network ("ip" or "ip:port").
	Upstreams []string `json:"upstreams,omitempty"`

	StoreDir      string `json:"storeDir,omitempty"`      // records.DefaultRoot
	ControlSocket string `json:"controlSocket,omitempty"` // server.DefaultControlSocket
	PidFile       string `json:"pidFile,omitempty"`       // server.DefaultPidFile
	Port          int    `json:"port,omitempty"`          // server.DefaultPort
	// IdleTimeout is how long the sidecar outlives the last record ("30s"; negative: forever).
	IdleTimeout string `json:"idleTimeout,omitempty"`
	// WaitTimeout bounds the wait for the sidecar's first answer on ADD ("3s").
	WaitTimeout string `json:"waitTimeout,omitempty"`
	// KeepPrivileges keeps the sidecar's capabilities (for debugging).
	KeepPrivileges bool `json:"keepPrivileges,omitempty"`

	idle, wait time.Duration
}

// RunDirEnv, when set in the plugin's environment, moves the sidecar's default paths
// (record store, control socket, pid file) under that directory: one machine can then
// host several independent "hosts" (labs, demos, tests), each with its own sidecar.
const RunDirEnv = "MOOR_RUN_DIR"

func loadConf(call *plugins.Call) (*conf, error) {
	c := &conf{
		StoreDir:      records.DefaultRoot,
		ControlSocket: server.DefaultControlSocket,
		PidFile:       server.DefaultPidFile,
		Port:          server.DefaultPort,
		Domain:        server.DefaultDomain,
	}
	if dir := call.Getenv(RunDirEnv); dir != "" {
		c.StoreDir = filepath.Join(dir, "dns")
		c.ControlSocket = filepath.Join(dir, "dns.sock")
		c.PidFile = filepath.Join(dir, "dns.pid")
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
