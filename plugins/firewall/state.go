package firewall

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/statefs"
)

// State is the firewall's own record of what it was asked to build: every network and
// every attachment with published ports, as the bridge driver's ADD passed them. The
// Repairer rebuilds moor's rules from it alone after someone removed them (a firewall
// reload), so nothing else (the conflist, the IPAM store, the runtime's cache) is needed
// then. It is a directory of small JSON files, one per network and one per attachment:
//
//	<dir>/<network>/network.json
//	<dir>/<network>/<containerID>~<ifname>.json
//
// names path-escaped. Each file is written whole (temporary file and rename), so a reader
// sees the old or the new content, never a part. It lives under the run directory: the
// kernel's rules do not survive a reboot either, and ADD writes it again.
//
// It does not hold attachments without published ports (their network's rules are all
// they need) and is not a lock: writers are plugin calls, which hold the firewall's host
// lock around the rules they change.
type State struct {
	Dir string
}

// DefaultStateDir is <$MOOR_RUN_DIR or /run/moor>/firewall (statefs.RunDir).
func DefaultStateDir(getenv func(string) string) string {
	return filepath.Join(statefs.RunDir(getenv), "firewall")
}

const backendFile = "backend"

// SetBackend records the kind of backend (KindNFTables, KindIPTables) the host's networks
// use; one backend per host (see mixing.go).
func (s State) SetBackend(kind string) error {
	if old, err := readFile(filepath.Join(s.Dir, backendFile)); err == nil && string(old) == kind {
		return nil
	}
	return writeFile(filepath.Join(s.Dir, backendFile), []byte(kind))
}

// Backend returns the recorded backend kind, KindDetect when none is recorded.
func (s State) Backend() string {
	b, err := readFile(filepath.Join(s.Dir, backendFile))
	if err != nil {
		return KindDetect
	}
	return string(b)
}

// StoredNetwork is one network of the State with its attachments.
type StoredNetwork struct {
	Network     Network
	Attachments []Attachment
}

const networkFile = "network.json"

func (s State) netDir(name string) string { return filepath.Join(s.Dir, url.PathEscape(name)) }

func attFile(containerID, ifName string) string {
	return url.PathEscape(containerID) + "~" + url.PathEscape(ifName) + ".json"
}

// SaveNetwork records the network (replacing its previous record).
func (s State) SaveNetwork(n Network) error {
	return writeJSON(filepath.Join(s.netDir(n.Name), networkFile), n)
}

// SaveAttachment records the attachment and its network. An attachment without ports is
// removed instead: it has no rules of its own.
func (s State) SaveAttachment(n Network, a Attachment) error {
	if err := s.SaveNetwork(n); err != nil {
		return err
	}
	if len(a.Ports) == 0 {
		return s.RemoveAttachment(a.Network, a.ContainerID, a.IfName)
	}
	return writeJSON(filepath.Join(s.netDir(a.Network), attFile(a.ContainerID, a.IfName)), a)
}

// RemoveAttachment forgets the attachment; a missing one is success.
func (s State) RemoveAttachment(network, containerID, ifName string) error {
	err := os.Remove(filepath.Join(s.netDir(network), attFile(containerID, ifName)))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return &StateError{Op: "remove attachment", Err: err}
	}
	return nil
}

// HasAttachment tells whether the attachment is still recorded.
func (s State) HasAttachment(network, containerID, ifName string) bool {
	_, err := os.Stat(filepath.Join(s.netDir(network), attFile(containerID, ifName)))
	return err == nil
}

// RemoveNetwork forgets the network and its attachments; a missing one is success.
func (s State) RemoveNetwork(name string) error {
	if err := os.RemoveAll(s.netDir(name)); err != nil {
		return &StateError{Op: "remove network", Err: err}
	}
	return nil
}

// GC forgets the network's attachments that are not in valid.
func (s State) GC(network string, valid []AttachmentKey) error {
	sn, err := s.loadNetwork(s.netDir(network))
	if err != nil || sn == nil {
		return err
	}
	keep := map[AttachmentKey]bool{}
	for _, k := range valid {
		keep[k] = true
	}
	var errs []error
	for _, a := range sn.Attachments {
		if !keep[a.Key()] {
			errs = append(errs, s.RemoveAttachment(a.Network, a.ContainerID, a.IfName))
		}
	}
	return errors.Join(errs...)
}

// Load reads every recorded network, sorted by name. A directory that does not exist is
// an empty State; a file that cannot be parsed is an error naming it.
func (s State) Load() ([]StoredNetwork, error) {
	ents, err := os.ReadDir(s.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, &StateError{Op: "read", Err: err}
	}
	var out []StoredNetwork
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		sn, err := s.loadNetwork(filepath.Join(s.Dir, e.Name()))
		if err != nil {
			return nil, err
		}
		if sn != nil {
			out = append(out, *sn)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Network.Name < out[j].Network.Name })
	return out, nil
}

func (s State) loadNetwork(dir string) (*StoredNetwork, error) {
	var sn StoredNetwork
	if err := readJSON(filepath.Join(dir, networkFile), &sn.Network); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, &StateError{Op: "read", Err: err}
	}
	for _, e := range ents {
		if e.Name() == networkFile || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		var a Attachment
		if err := readJSON(filepath.Join(dir, e.Name()), &a); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed by a DEL meanwhile
			}
			return nil, err
		}
		sn.Attachments = append(sn.Attachments, a)
	}
	return &sn, nil
}

func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return &StateError{Op: "encode " + path, Err: err}
	}
	return writeFile(path, b)
}

// writeFile replaces path whole (temporary file and rename), through statefs.
func writeFile(path string, b []byte) error {
	if err := statefs.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return &StateError{Op: "write", Err: err}
	}
	tmp := path + ".tmp"
	f, err := statefs.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return &StateError{Op: "write", Err: err}
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return &StateError{Op: "write", Err: err}
	}
	return nil
}

func readFile(path string) ([]byte, error) {
	f, err := statefs.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

func readJSON(path string, v any) error {
	b, err := readFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return &StateError{Op: "parse " + path, Err: err}
	}
	return nil
}

// StateError reports that the firewall state could not be read or written.
type StateError struct {
	Op  string
	Err error
}

func (e *StateError) Error() string { return fmt.Sprintf("firewall state: %s: %v", e.Op, e.Err) }

// Unwrap exposes the cause.
func (e *StateError) Unwrap() error { return e.Err }

// CNICode implements codes.Coded: the state store refused a read or write.
func (e *StateError) CNICode() uint { return codes.StoreFailure }
