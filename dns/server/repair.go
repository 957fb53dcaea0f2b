package server

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/moornet/moor/dns/records"
	"github.com/moornet/moor/plugins/firewall"
)

// firewallRepair is the server's firewall Repairer and its loop.
type firewallRepair struct {
	r    *firewall.Repairer
	done chan struct{}
	// kept is the backend kind the server's privileges were kept for when it started
	// (FirewallRetain); with KeepPrivileges the server keeps everything and kept is "".
	kept string
}

// openRepair opens the Repairer of the server's namespace (its State, the firewall lock,
// the event socket) while the server still has its privileges, opens the State to the
// server's group, and says what the repair needs kept when privileges drop: CAP_NET_ADMIN
// (nftables through netlink), and for a namespace whose networks use iptables also
// CAP_NET_RAW and exec (iptables is a program). A Repairer that cannot be opened is logged
// and left out: DNS does not depend on it.
func (s *Server) openRepair() Retain {
	if !s.opts.FirewallRepair {
		return Retain{}
	}
	r, err := firewall.NewRepairer(firewall.RepairOptions{RunDir: s.opts.FirewallRunDir,
		Logf: func(format string, args ...any) { s.log.Info("firewall repair", "msg", fmt.Sprintf(format, args...)) }})
	if err == nil && !s.opts.KeepPrivileges {
		err = records.GrantRead(r.StateDir(), s.opts.GID)
		if err != nil {
			r.Close()
		}
	}
	if err != nil {
		s.log.Warn("no firewall repair", "err", err)
		return Retain{}
	}
	s.repair = &firewallRepair{r: r, done: make(chan struct{})}
	if !s.opts.KeepPrivileges {
		s.repair.kept = r.Backend()
	}
	return FirewallRetain(r.Backend())
}

// needsRestart reports whether the repair now needs privileges the server dropped when it
// started: the namespace's networks moved to the iptables backend (a program, so
// CAP_NET_RAW and exec) after the server kept only what nftables needs. A server cannot
// raise what it dropped (no_new_privs, and the capabilities are gone), so it says so in
// /healthz (Health.FirewallRestart) and the plugin's next ADD replaces it with one started
// with the right privileges (dns/sidecar.go). Until then its repairs fail and say why.
func (s *Server) needsRestart() bool {
	if s.repair == nil || s.opts.KeepPrivileges {
		return false
	}
	want := FirewallRetain(s.repair.r.Backend())
	have := FirewallRetain(s.repair.kept)
	return want.Exec && !have.Exec || len(want.Caps) > len(have.Caps)
}

// FirewallRetain is what the repair of a namespace whose networks use the firewall
// backend kind needs kept (see openRepair).
func FirewallRetain(kind string) Retain {
	if kind == firewall.KindIPTables {
		return Retain{Caps: []uintptr{unix.CAP_NET_ADMIN, unix.CAP_NET_RAW}, Exec: true}
	}
	return Retain{Caps: []uintptr{unix.CAP_NET_ADMIN}}
}

// runRepair runs the Repairer until the server closes.
func (s *Server) runRepair() {
	if s.repair == nil {
		return
	}
	go func() {
		defer close(s.repair.done)
		_ = s.repair.r.Run(s.baseCtx)
	}()
}

// stopRepair waits for the repair loop (baseCtx is cancelled) and closes the Repairer.
func (s *Server) stopRepair(started bool) {
	if s.repair == nil {
		return
	}
	if started {
		<-s.repair.done
	}
	s.repair.r.Close()
}

// repairStats is the Repairer's counters for /healthz, nil without one.
func (s *Server) repairStats() *firewall.RepairStats {
	if s.repair == nil {
		return nil
	}
	st := s.repair.r.Stats()
	return &st
}
