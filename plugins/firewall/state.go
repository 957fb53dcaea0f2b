package firewall

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/moornet/moor/plugins/codes"
	"github.com/moornet/moor/plugins/namehash"
	"github.com/moornet/moor/plugins/netnsid"
	"github.com/moornet/moor/plugins/statefs"
	"github.com/moornet/moor/plugins/sysrand"
)

// State is the firewall's own record of what it was asked to build in one host network
// namespace: every network (EnsureNetwork, AddAttachment), every attachment with
// published ports and every MAC spoof check (AddMacSpoof), exactly as the callers passed
// them. A Repairer rebuilds moor's rules
// from it alone after someone removed them, so nothing else (the conflist, the IPAM
// store, the runtime's cache) is needed then. Layout, names path-escaped:
//
//	<dir>/cookie                    the namespace cookie of the writer (see netnsid.Cookie)
//	<dir>/backend                   KindNFTables or KindIPTables
//	<dir>/<network>/network.json
//	<dir>/<network>/a-<hash of containerID and ifname>.json
//	<dir>/%macspoof/a-<hash of containerID and ifname>.json   a MacSpoof (state_macspoof.go)
//
// Where: <run>/firewall for the machine's own namespace and <run>/netns/<dev>-<ino>/firewall
// for any other (netnsid.StateDir, the rule the DNS sidecar's paths follow), <run> being
// the directory of Options.LockFile. So a repairer applies only the state of the namespace
// it runs in. The kernel gives a dead namespace's identity to a later one; the cookie tells
// the two apart: a writer that finds another cookie empties the directory first, and a
// repairer ignores a directory whose cookie is not its namespace's.
//
// Writes happen inside the backends' locked sections (Options.LockFile), the same lock
// that serialises the rules, so two plugin calls never write one network's files at once
// and a repairer that holds the lock sees the state and the rules agree. Each file is
// written whole under a unique temporary name and renamed, so a reader sees the old or the
// new content; readers skip a file that vanished meanwhile. Files are 0640 and
// directories 0750: a reader that was given the directory's group (the DNS sidecar, see
// records.GrantRead) can read it without privileges; others get nothing.
//
// It does not hold attachments without published ports (their network's rules are all
// they need) and it is not a lock.
type State struct {
	Dir string
	// root, when set, is where reads go (a Repairer opens it before dropping privileges,
	// after which Dir's parents may be closed to it).
	root *os.Root
}

const (
	cookieFile     = "cookie"
	backendFile    = "backend"
	networkFile    = "network.json"
	stateDirMode   = 0o750
	stateFileMode  = 0o640
	stateDirName   = "firewall"
	attachmentPref = "a-"
	// deletingPref marks an attachment record that a DEL has forgotten but whose rules
	// it may not have removed yet (see markDeleting). Loaders skip it: a Repairer never
	// puts back what is being deleted.
	deletingPref = "deleting-"
)

// StateDirIn returns the firewall state directory of the network namespace id under
// runDir (machine: the machine's own namespace).
func StateDirIn(runDir string, id netnsid.ID, machine bool) string {
	return filepath.Join(netnsid.StateDir(runDir, id, machine), stateDirName)
}

// StoredNetwork is one network of the State with its attachments.
type StoredNetwork struct {
	Network     Network
	Attachments []Attachment
}

func netDirName(name string) string { return url.PathEscape(name) }

func attFileName(k AttachmentKey) string {
	h := namehash.Sum256([]byte(k.ContainerID + "\x00" + k.IfName))
	return attachmentPref + hex.EncodeToString(h[:16]) + ".json"
}

// claim makes the directory the state of the namespace whose cookie is given: a directory
// written by another life of the namespace's identity is emptied first.
func (s State) claim(cookie uint64) error {
	if err := statefs.MkdirAll(s.Dir, stateDirMode); err != nil {
		return &StateError{Op: "create", Err: err}
	}
	want := strconv.FormatUint(cookie, 10)
	have, err := s.read(cookieFile)
	if err == nil && string(have) == want {
		return nil
	}
	if err == nil { // another life of this identity: its networks are not ours
		ents, _ := os.ReadDir(s.Dir)
		for _, e := range ents {
			_ = os.RemoveAll(filepath.Join(s.Dir, e.Name()))
		}
	}
	return s.write(cookieFile, []byte(want))
}

// Cookie returns the recorded namespace cookie (0 when none).
func (s State) Cookie() uint64 {
	b, err := s.read(cookieFile)
	if err != nil {
		return 0
	}
	c, _ := strconv.ParseUint(string(b), 10, 64)
	return c
}

// Backend returns the recorded backend kind, KindDetect when none is recorded.
func (s State) Backend() string {
	b, err := s.read(backendFile)
	if err != nil {
		return KindDetect
	}
	return string(b)
}

// saveNetwork records the backend and the network; undo puts the previous record back.
func (s State) saveNetwork(kind string, n Network) (undo func(), err error) {
	if s.Backend() != kind {
		if err := s.write(backendFile, []byte(kind)); err != nil {
			return nil, err
		}
	}
	return s.replace(filepath.Join(netDirName(n.Name), networkFile), n)
}

// saveAttachment records the network and the attachment (an attachment without ports is
// forgotten instead); undo puts the previous records back.
func (s State) saveAttachment(kind string, n Network, a Attachment) (undo func(), err error) {
	undoNet, err := s.saveNetwork(kind, n)
	if err != nil {
		return nil, err
	}
	rel := filepath.Join(netDirName(a.Network), attFileName(a.Key()))
	var undoAtt func()
	if len(a.Ports) == 0 {
		old, rerr := s.read(rel)
		err = s.remove(rel)
		undoAtt = func() {
			if rerr == nil {
				_ = s.write(rel, old)
			}
		}
	} else {
		undoAtt, err = s.replace(rel, a)
	}
	if err != nil {
		undoNet()
		return nil, err
	}
	return func() { undoAtt(); undoNet() }, nil
}

// replace writes v as JSON at rel unless the file already holds exactly that, and
// returns how to put the previous content back.
func (s State) replace(rel string, v any) (undo func(), err error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, &StateError{Op: "encode " + rel, Err: err}
	}
	old, rerr := s.read(rel)
	if rerr == nil && bytes.Equal(old, b) {
		return func() {}, nil
	}
	if err := s.write(rel, b); err != nil {
		return nil, err
	}
	return func() {
		if rerr == nil {
			_ = s.write(rel, old)
		} else {
			_ = s.remove(rel)
		}
	}, nil
}

// markDeleting is how a DEL forgets an attachment before removing its rules: the record
// is renamed to its deleting name, which no loader reads (so no repair brings the rules
// back meanwhile) but attachmentRecord still finds (so a DEL that died or failed before
// its rules were gone still knows, when repeated, what they were). removeAttachment
// deletes both names.
func (s State) markDeleting(k AttachmentKey) error {
	dir := filepath.Join(s.Dir, netDirName(k.Network))
	err := os.Rename(filepath.Join(dir, attFileName(k)), filepath.Join(dir, deletingPref+attFileName(k)))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return &StateError{Op: "forget attachment " + k.String(), Err: err}
	}
	return nil
}

// attachmentRecord reads the record of k, or its deleting record (markDeleting): nil
// when there is neither (an attachment without published ports, or one never added
// here); known tells whether the state knows k's network at all (its network file
// exists), which makes a missing record trustworthy.
func (s State) attachmentRecord(k AttachmentKey) (rec *Attachment, known bool, err error) {
	dir := netDirName(k.Network)
	var a Attachment
	err = s.readJSON(filepath.Join(dir, attFileName(k)), &a)
	if errors.Is(err, fs.ErrNotExist) {
		err = s.readJSON(filepath.Join(dir, deletingPref+attFileName(k)), &a)
	}
	switch {
	case err == nil && a.Key() == k:
		return &a, true, nil
	case err == nil:
		return nil, false, nil // a hash collision or a foreign file: trust nothing
	case !errors.Is(err, fs.ErrNotExist):
		return nil, false, err
	}
	if _, err := s.read(filepath.Join(dir, networkFile)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, false, nil
		}
		return nil, false, err
	}
	return nil, true, nil
}

// removeAttachment forgets the attachment; a missing one is success.
func (s State) removeAttachment(k AttachmentKey) error {
	return errors.Join(s.remove(filepath.Join(netDirName(k.Network), attFileName(k))),
		s.remove(filepath.Join(netDirName(k.Network), deletingPref+attFileName(k))))
}

// removeNetwork forgets the network and its attachments; a missing one is success.
func (s State) removeNetwork(name string) error {
	if err := os.RemoveAll(filepath.Join(s.Dir, netDirName(name))); err != nil {
		return &StateError{Op: "remove network " + name, Err: err}
	}
	return nil
}

// gc forgets the network's attachments that are not in valid.
func (s State) gc(network string, valid []AttachmentKey) error {
	sn, err := s.loadNetwork(netDirName(network))
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
			errs = append(errs, s.removeAttachment(a.Key()))
		}
	}
	return errors.Join(errs...)
}

// Load reads every recorded network, sorted by name. A directory that does not exist is
// an empty State; a file that vanished meanwhile is left out; a file that cannot be parsed
// is reported (naming it) beside what could be read.
func (s State) Load() ([]StoredNetwork, error) {
	ents, err := s.readDir(".")
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, &StateError{Op: "read", Err: err}
	}
	var out []StoredNetwork
	var errs []error
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		sn, err := s.loadNetwork(e.Name())
		if err != nil {
			errs = append(errs, err)
		}
		if sn != nil {
			out = append(out, *sn)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Network.Name < out[j].Network.Name })
	return out, errors.Join(errs...)
}

// HasAttachment tells whether the attachment is recorded.
func (s State) HasAttachment(k AttachmentKey) bool {
	_, err := s.read(filepath.Join(netDirName(k.Network), attFileName(k)))
	return err == nil
}

func (s State) loadNetwork(dir string) (*StoredNetwork, error) {
	var sn StoredNetwork
	if err := s.readJSON(filepath.Join(dir, networkFile), &sn.Network); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil // removed meanwhile, or being written for the first time
		}
		return nil, err
	}
	ents, err := s.readDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, &StateError{Op: "read " + dir, Err: err}
	}
	var errs []error
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), attachmentPref) || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		var a Attachment
		if err := s.readJSON(filepath.Join(dir, e.Name()), &a); err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
			continue
		}
		if a.Network == sn.Network.Name {
			sn.Attachments = append(sn.Attachments, a)
		}
	}
	sort.Slice(sn.Attachments, func(i, j int) bool {
		return sn.Attachments[i].Key().String() < sn.Attachments[j].Key().String()
	})
	return &sn, errors.Join(errs...)
}

// write replaces rel whole: a temporary file of a unique name, then a rename.
func (s State) write(rel string, b []byte) error {
	path := filepath.Join(s.Dir, rel)
	if err := statefs.MkdirAll(filepath.Dir(path), stateDirMode); err != nil {
		return &StateError{Op: "write " + rel, Err: err}
	}
	tmp := fmt.Sprintf("%s.tmp-%s", path, sysrand.Text())
	f, err := statefs.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, stateFileMode)
	if err != nil {
		return &StateError{Op: "write " + rel, Err: err}
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Chmod(stateFileMode) // the umask may have taken the group's read
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return &StateError{Op: "write " + rel, Err: err}
	}
	return nil
}

func (s State) remove(rel string) error {
	if err := os.Remove(filepath.Join(s.Dir, rel)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return &StateError{Op: "remove " + rel, Err: err}
	}
	return nil
}

func (s State) read(rel string) ([]byte, error) {
	if s.root != nil {
		f, err := s.root.OpenFile(rel, os.O_RDONLY|unix.O_NOFOLLOW, 0)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		return io.ReadAll(f)
	}
	f, err := statefs.OpenFile(filepath.Join(s.Dir, rel), os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

func (s State) readDir(rel string) ([]fs.DirEntry, error) {
	if s.root != nil {
		f, err := s.root.Open(rel)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		return f.ReadDir(-1)
	}
	return os.ReadDir(filepath.Join(s.Dir, rel))
}

func (s State) readJSON(rel string, v any) error {
	b, err := s.read(rel)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return &StateError{Op: "parse " + rel, Err: err}
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
