package server

import "github.com/moornet/moor/plugins/netnsid"

// checkNetns marks the server orphaned, and starts its idle countdown, when nothing but
// this process keeps its namespace alive (netnsid.InUse): the namespace was deleted, nobody
// can attach a container to it or ask the server anything, so the server counts as idle
// whatever records it holds. It never comes back from that state (a namespace nobody holds
// can only be reached again through this process). It reports whether the server is
// orphaned. It runs every Options.NetnsCheck (follow) and on every GET /healthz, so that a
// plugin of another namespace asking about this server learns the current state (the check
// is one stat per process).
func (s *Server) checkNetns() bool {
	if s.orphaned.Load() {
		return true
	}
	inUse, err := netnsid.InUse(s.netns)
	if err != nil {
		s.log.Warn("cannot tell whether the network namespace is still in use", "netns", s.netns, "err", err)
		return false
	}
	if inUse {
		return false
	}
	s.updateMu.Lock()
	defer s.updateMu.Unlock()
	if !s.orphaned.Swap(true) {
		s.log.Info("the network namespace was deleted: stopping after the idle timeout", "netns", s.netns)
		s.armIdle(s.snap.Load().records)
	}
	return true
}
