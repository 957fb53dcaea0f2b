package firewall

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sort"
	"strings"
)

// macSpoofDir holds the State's MAC spoof records, one file per attachment (its MacSpoof
// as AddMacSpoof got it), apart from the networks: the spoof check does not need its
// network's firewall rules, so a network may have records here and no network.json. The
// name cannot be a network's directory (netDirName escapes '%', and "%ma" is no escape).
const macSpoofDir = "%macspoof"

func macSpoofFile(k AttachmentKey) string { return filepath.Join(macSpoofDir, attFileName(k)) }

func (m MacSpoof) key() AttachmentKey {
	return AttachmentKey{Network: m.Network, ContainerID: m.ContainerID, IfName: m.IfName}
}

// saveMacSpoof records m; undo puts the previous record back.
func (s State) saveMacSpoof(m MacSpoof) (undo func(), err error) {
	return s.replace(macSpoofFile(m.key()), m)
}

// removeMacSpoof forgets the attachment's record; a missing one is success.
func (s State) removeMacSpoof(k AttachmentKey) error { return s.remove(macSpoofFile(k)) }

// LoadMacSpoofs reads every recorded MAC spoof check, sorted by attachment. A file that
// vanished meanwhile is left out; one that cannot be parsed is reported beside the rest.
func (s State) LoadMacSpoofs() ([]MacSpoof, error) {
	ents, err := s.readDir(macSpoofDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, &StateError{Op: "read " + macSpoofDir, Err: err}
	}
	var out []MacSpoof
	var errs []error
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), attachmentPref) || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		var m MacSpoof
		if err := s.readJSON(filepath.Join(macSpoofDir, e.Name()), &m); err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
			continue
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key().String() < out[j].key().String() })
	return out, errors.Join(errs...)
}

// macSpoofKeys lists every attachment with a rule in the spoof check's chain.
func macSpoofKeys(opts Options) ([]AttachmentKey, error) {
	b := newNFT(opts.withDefaults())
	c, done, err := b.conn()
	if err != nil {
		return nil, err
	}
	defer done()
	rules, err := b.readLabels(c, macSpoofTableRef(), macSpoofChain, "")
	if err != nil {
		return nil, err
	}
	var keys []AttachmentKey
	for _, r := range rules {
		if r.label.Rule == macSpoofRule {
			keys = append(keys, r.label.key())
		}
	}
	return keys, nil
}

// repairMacSpoofs re-applies the recorded MAC spoof checks the kernel lacks (the
// "bridge moor" table is nftables whatever the IP backend is). Like the networks, it
// checks without the lock and applies under it, from the records as they are then.
func (r *Repairer) repairMacSpoofs() ([]string, error) {
	if r.state.Cookie() != r.cookie {
		return nil, nil
	}
	recs, err := r.state.LoadMacSpoofs()
	if len(recs) == 0 {
		return nil, err
	}
	opts := Options{NetNS: r.netNS, LockFile: r.lock.Name(), repairing: true}
	keys, err := macSpoofKeys(opts)
	if err != nil {
		return nil, err
	}
	have := map[AttachmentKey]bool{}
	for _, k := range keys {
		have[k] = true
	}
	missing := map[AttachmentKey]bool{}
	for _, m := range recs {
		if !have[m.key()] {
			missing[m.key()] = true
		}
	}
	if len(missing) == 0 {
		return nil, nil
	}
	unlock, err := r.takeLock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	recs, loadErr := r.state.LoadMacSpoofs()
	errs := []error{loadErr}
	var fixed []string
	for _, m := range recs {
		if !missing[m.key()] {
			continue
		}
		if err := AddMacSpoof(opts, m); err != nil {
			errs = append(errs, fmt.Errorf("macspoof %s: %w", m.key(), err))
			continue
		}
		fixed = append(fixed, "macspoof "+m.key().String())
	}
	return fixed, errors.Join(errs...)
}
