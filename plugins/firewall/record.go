package firewall

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/moornet/moor/plugins/netnsid"
)

// stateHere returns the State of the namespace the backend works in (Options.NetNS, else
// the calling thread's), claimed for that namespace's cookie (see State). With
// Options.StateDir set, that directory is used as it is.
func (o Options) stateHere() (State, error) {
	var st State
	err := o.inNetNS(func() error {
		cookie, err := namespaceCookie()
		if err != nil {
			return err
		}
		st.Dir = o.StateDir
		if st.Dir == "" {
			dir, _, err := netnsid.SelfStateDir(filepath.Dir(o.LockFile))
			if err != nil {
				return &StateError{Op: "identify the network namespace", Err: err}
			}
			st.Dir = filepath.Join(dir, stateDirName)
		}
		return st.claim(cookie)
	})
	return st, err
}

// inNetNS runs fn in Options.NetNS, or in the calling thread's namespace when nil.
func (o Options) inNetNS(fn func() error) error {
	if o.NetNS == nil {
		return fn()
	}
	return o.NetNS.Do(func(ns.NetNS) error { return fn() })
}

// recorded runs a mutating operation's state change and then apply, both inside the
// operation's locked section: a failed apply undoes the state change, so that a failed
// ADD leaves no record behind. A Repairer's backend records nothing (it applies the
// State). Removals go through forget instead.
func (o Options) recorded(what string, change func(State) (undo func(), err error), apply func() error) error {
	if o.repairing {
		return apply()
	}
	st, err := o.stateHere()
	if err != nil {
		return err
	}
	undo, err := change(st)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := apply(); err != nil {
		undo()
		return err
	}
	return nil
}

// lock takes the host lock of mutating operations; a Repairer's backend runs inside the
// lock its Repairer holds.
func (o Options) lock() (func(), error) {
	if o.repairing {
		return func() {}, nil
	}
	return hostLock(o.LockFile, o.LockTimeout)
}

// checkSockets is checkHostSockets, skipped when a Repairer puts back ports that were
// checked when first published: a socket on such a port is the runtime's reservation
// (Podman hands its reservations to conmon for the container's lifetime).
func (o Options) checkSockets(netNS ns.NetNS, rules []portRule) error {
	if o.repairing {
		return nil
	}
	return checkHostSockets(netNS, rules, o.PortReservers)
}

// stateGC forgets the recorded attachments of the network that are not in valid.
func (o Options) stateGC(network string, valid []AttachmentKey) error {
	if o.repairing {
		return nil
	}
	unlock, err := o.lock()
	if err != nil {
		return err
	}
	defer unlock()
	st, err := o.stateHere()
	if err != nil {
		return err
	}
	return st.gc(network, valid)
}

// forget runs a removal's state change at the start of its locked section, before the
// rules go, so that a Repairer never puts back what is being removed.
func (o Options) forget(change func(State) error) error {
	if o.repairing {
		return nil
	}
	st, err := o.stateHere()
	if err != nil {
		return err
	}
	return change(st)
}

func (b *nftBackend) options() Options { return b.opts }
func (b *iptBackend) options() Options { return b.opts }

// namespaceCookie is netnsid.Cookie, 0 on kernels that do not report one (the state is
// then not told apart from a dead namespace's of the same identity).
func namespaceCookie() (uint64, error) {
	c, err := netnsid.Cookie()
	if errors.Is(err, netnsid.ErrNoCookie) {
		return 0, nil
	}
	if err != nil {
		return 0, &StateError{Op: "identify the network namespace", Err: err}
	}
	return c, nil
}
