package records

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/moornet/moor/plugins/statefs"
)

// File layout and permissions of the Local backend.
const (
	networkFileName = "network.json"
	recordSuffix    = ".json"
	tempPrefix      = ".tmp-"
	dirMode         = 0o700 // the store's root until GrantRead opens it to a group
	// netDirMode and fileMode give the group of the store's root (see GrantRead) read
	// access; the setgid bit makes what is created inside inherit that group.
	netDirMode  = 0o750 | fs.ModeSetgid
	fileMode    = 0o640
	fileVersion = 1

	// defaultLockWait bounds the wait for a network's writer lock when ctx has no deadline.
	defaultLockWait = 10 * time.Second
	// lockPoll is how often a contended flock is retried.
	lockPoll = 2 * time.Millisecond
)

// networkFile is the JSON form of network.json.
type networkFile struct {
	Version   int      `json:"version"`
	Name      string   `json:"name"`
	Domain    string   `json:"domain,omitempty"`
	Gateways  []string `json:"gateways"`
	Subnets   []string `json:"subnets"`
	Internal  bool     `json:"internal,omitempty"`
	Upstreams []string `json:"upstreams,omitempty"`
}

// recordFile is the JSON form of <containerID>.<ifname>.json.
type recordFile struct {
	Version     int      `json:"version"`
	Network     string   `json:"network"`
	ContainerID string   `json:"containerID"`
	IfName      string   `json:"ifName"`
	Names       []string `json:"names"`
	IPs         []string `json:"ips"`
}

// Local is the file-backed Store for networks of one host.
type Local struct {
	root string
	b    broadcaster
}

var _ Store = (*Local)(nil)

// NewLocal opens (creating it with mode 0700 if needed) a Local store rooted at root;
// an empty root means DefaultRoot.
func NewLocal(root string) (*Local, error) {
	if root == "" {
		root = DefaultRoot
	}
	if err := statefs.MkdirAll(root, dirMode); err != nil {
		return nil, ioError("create", root, err)
	}
	return &Local{root: root}, nil
}

// Root returns the directory the store keeps its files in.
func (l *Local) Root() string { return l.root }

func (l *Local) netDir(network string) string { return filepath.Join(l.root, network) }

func recordFileName(containerID, ifName string) string {
	return containerID + "." + ifName + recordSuffix
}

// PutNetwork implements Store.
func (l *Local) PutNetwork(ctx context.Context, n Network) error {
	n, err := normalizeNetwork(n)
	if err != nil {
		return err
	}
	dir := l.netDir(n.Name)
	for {
		if err := os.Mkdir(dir, netDirMode.Perm()); err == nil {
			if err := os.Chmod(dir, netDirMode); err != nil { // exact bits, whatever the umask
				return &IOError{Op: "chmod", Path: dir, Err: err}
			}
		} else if !errors.Is(err, fs.ErrExist) {
			return &IOError{Op: "create", Path: dir, Err: err}
		}
		if err := statefs.CheckDir(dir); err != nil {
			return ioError("create", dir, err)
		}
		unlock, err := l.lock(ctx, n.Name)
		if errors.Is(err, errGone) || errors.Is(err, fs.ErrNotExist) {
			continue // deleted between Mkdir and lock: make it again
		}
		if err != nil {
			return err
		}
		err = putNetworkFile(dir, toNetworkFile(n))
		unlock()
		if err != nil {
			return err
		}
		l.b.notify(n.Name)
		return nil
	}
}

// DeleteNetwork implements Store.
func (l *Local) DeleteNetwork(ctx context.Context, name string) error {
	if err := ValidNetworkName(name); err != nil {
		return err
	}
	unlock, err := l.lock(ctx, name)
	if errors.Is(err, errGone) || errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unlock()
	dir := l.netDir(name)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return &IOError{Op: "read", Path: dir, Err: err}
	}
	// Remove network.json first, so that a crash half-way leaves a network readers skip.
	var errs []error
	if err := os.Remove(filepath.Join(dir, networkFileName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, &IOError{Op: "remove", Path: filepath.Join(dir, networkFileName), Err: err})
	}
	for _, e := range entries {
		if e.Name() == networkFileName {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, &IOError{Op: "remove", Path: p, Err: err})
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, &IOError{Op: "remove", Path: dir, Err: err})
	}
	l.b.notify(name)
	return errors.Join(errs...)
}

// Put implements Store.
func (l *Local) Put(ctx context.Context, r Record) error {
	r, err := normalizeRecord(r)
	if err != nil {
		return err
	}
	unlock, err := l.lock(ctx, r.Network)
	if errors.Is(err, errGone) || errors.Is(err, fs.ErrNotExist) {
		return &NotFoundError{Network: r.Network}
	}
	if err != nil {
		return err
	}
	defer unlock()
	dir := l.netDir(r.Network)
	if _, err := os.Stat(filepath.Join(dir, networkFileName)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return &NotFoundError{Network: r.Network}
		}
		return &IOError{Op: "stat", Path: filepath.Join(dir, networkFileName), Err: err}
	}
	name := recordFileName(r.ContainerID, r.IfName)
	have, haveErr := readRecord(filepath.Join(dir, name))
	if haveErr == nil && have.Key() != r.Key() {
		return &ConflictError{Want: r.Key(), Have: have.Key()}
	}
	count, countErr := l.currentCount(r.Network)
	replaced := !errors.Is(haveErr, fs.ErrNotExist)
	if replaced || countErr != nil {
		// The count of files stays: a crash after the write must leave no counter (see
		// countFileName).
		_ = os.Remove(filepath.Join(dir, countFileName))
	}
	if err := writeJSON(dir, name, toRecordFile(r)); err != nil {
		return err
	}
	if countErr == nil {
		if !replaced {
			count.Records++
		} else if haveErr == nil {
			count.Names -= len(have.Names)
		}
		count.Names += len(r.Names)
		writeCount(dir, count)
	}
	l.b.notify(r.Network)
	return nil
}

// Delete implements Store.
func (l *Local) Delete(ctx context.Context, network, containerID, ifName string) error {
	if err := ValidKey(network, containerID, ifName); err != nil {
		return err
	}
	unlock, err := l.lock(ctx, network)
	if errors.Is(err, errGone) || errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unlock()
	p := filepath.Join(l.netDir(network), recordFileName(containerID, ifName))
	want := RecordKey{Network: network, ContainerID: containerID, IfName: ifName}
	have, haveErr := readRecord(p)
	if haveErr == nil && have.Key() != want {
		return nil // the slot holds another attachment's record (see ConflictError)
	}
	if errors.Is(haveErr, fs.ErrNotExist) {
		return nil
	}
	count, countErr := l.currentCount(network)
	if err := os.Remove(p); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return &IOError{Op: "remove", Path: p, Err: err}
	}
	if countErr == nil {
		count.Records--
		if haveErr == nil {
			count.Names -= len(have.Names)
		}
		writeCount(l.netDir(network), count)
	}
	l.b.notify(network)
	return nil
}

// List implements Store.
func (l *Local) List(ctx context.Context, network string) ([]Record, error) {
	if network != "" {
		if err := ValidNetworkName(network); err != nil {
			return nil, err
		}
		return l.listNetwork(network)
	}
	names, err := l.networkDirs()
	if err != nil {
		return nil, err
	}
	var out []Record
	var errs []error
	for _, n := range names {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		rs, err := l.listNetwork(n)
		if out == nil {
			out = rs // one network, the usual case: no copy
		} else {
			out = append(out, rs...)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return out, errors.Join(errs...)
}

func (l *Local) listNetwork(network string) ([]Record, error) {
	dir := l.netDir(network)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, &IOError{Op: "read", Path: dir, Err: err}
	}
	var out []Record
	if len(entries) > 1 { // network.json and records: sized once, a large list is never copied
		out = make([]Record, 0, len(entries)-1)
	}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if !isRecordFileName(name) {
			continue
		}
		p := filepath.Join(dir, name)
		r, err := readRecord(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted while we listed
		}
		if err == nil && (r.Network != network || recordFileName(r.ContainerID, r.IfName) != name) {
			err = &CorruptError{Path: p, Err: errors.New("file name does not match the record's network, container ID and interface")}
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, r)
	}
	return out, errors.Join(errs...)
}

// Networks implements Store.
func (l *Local) Networks(ctx context.Context) ([]Network, error) {
	names, err := l.networkDirs()
	if err != nil {
		return nil, err
	}
	var out []Network
	var errs []error
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		p := filepath.Join(l.netDir(name), networkFileName)
		n, err := readNetwork(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue // being created or deleted
		}
		if err == nil && n.Name != name {
			err = &CorruptError{Path: p, Err: errors.New("network name does not match its directory")}
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, n)
	}
	return out, errors.Join(errs...)
}

func (l *Local) networkDirs() ([]string, error) {
	entries, err := os.ReadDir(l.root)
	if err != nil {
		return nil, &IOError{Op: "read", Path: l.root, Err: err}
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() && ValidNetworkName(e.Name()) == nil {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// Watch implements Store. It reports changes made through this *Local value only.
func (l *Local) Watch(ctx context.Context) (<-chan Change, error) {
	return l.b.watch(ctx)
}

// Close implements Store.
func (l *Local) Close() error {
	l.b.close()
	return nil
}

// errGone reports that a network directory was removed while we waited for its lock.
var errGone = errors.New("network directory removed")

// lock takes the exclusive writer lock of a network (an flock on its directory) and returns
// the function that releases it.
func (l *Local) lock(ctx context.Context, network string) (func(), error) {
	dir := l.netDir(network)
	if err := statefs.CheckDir(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fs.ErrNotExist
		}
		return nil, ioError("open", dir, err)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, fs.ErrNotExist
		}
		return nil, ioError("open", dir, err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultLockWait)
		defer cancel()
	}
	for {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			_ = unix.Close(fd)
			return nil, &LockError{Network: network, Err: err}
		}
		select {
		case <-ctx.Done():
			_ = unix.Close(fd)
			return nil, &LockError{Network: network, Err: ctx.Err()}
		case <-time.After(lockPoll):
		}
	}
	// A directory removed while we waited has no links left.
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Nlink == 0 {
		_ = unix.Close(fd)
		return nil, errGone
	}
	// Closing the descriptor releases the flock.
	return func() { _ = unix.Close(fd) }, nil
}

// ioError wraps a file system error as an *IOError (code 108); a state path refused
// by package statefs keeps its own error (code 7).
func ioError(op, path string, err error) error {
	var unsafe *statefs.UnsafeError
	if errors.As(err, &unsafe) {
		return err
	}
	return &IOError{Op: op, Path: path, Err: err}
}

// writeJSON writes v to dir/name atomically: a 0640 temp file, fsync, rename, fsync of dir.
func writeJSON(dir, name string, v any) error { return writeFile(dir, name, v, true) }

// writeFile writes v to dir/name atomically (a 0640 temp file renamed), with the fsyncs
// of writeJSON when sync is set.
func writeFile(dir, name string, v any, sync bool) (err error) {
	data, err := json.Marshal(v)
	if err != nil {
		return &IOError{Op: "encode", Path: filepath.Join(dir, name), Err: err}
	}
	f, err := os.CreateTemp(dir, tempPrefix+"*")
	if err != nil {
		return &IOError{Op: "create", Path: dir, Err: err}
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	if err := f.Chmod(fileMode); err != nil {
		_ = f.Close()
		return &IOError{Op: "chmod", Path: tmp, Err: err}
	}
	if _, err := f.Write(append(data, '\n')); err != nil {
		_ = f.Close()
		return &IOError{Op: "write", Path: tmp, Err: err}
	}
	if sync {
		if err := f.Sync(); err != nil {
			_ = f.Close()
			return &IOError{Op: "sync", Path: tmp, Err: err}
		}
	}
	if err := f.Close(); err != nil {
		return &IOError{Op: "close", Path: tmp, Err: err}
	}
	dst := filepath.Join(dir, name)
	if err := os.Rename(tmp, dst); err != nil {
		return &IOError{Op: "rename", Path: dst, Err: err}
	}
	if !sync {
		return nil
	}
	syncDir(dir)
	return nil
}

// syncDir fsyncs dir, best effort: a rename in it is already visible to readers.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}

func toNetworkFile(n Network) networkFile {
	f := networkFile{Version: fileVersion, Name: n.Name, Domain: n.Domain, Internal: n.Internal, Upstreams: n.Upstreams}
	for _, g := range n.Gateways {
		f.Gateways = append(f.Gateways, g.String())
	}
	for _, s := range n.Subnets {
		f.Subnets = append(f.Subnets, s.String())
	}
	return f
}

func toRecordFile(r Record) recordFile {
	f := recordFile{Version: fileVersion, Network: r.Network, ContainerID: r.ContainerID, IfName: r.IfName, Names: r.Names}
	for _, ip := range r.IPs {
		f.IPs = append(f.IPs, ip.String())
	}
	return f
}

// readJSON decodes the file at p into v; a missing file is fs.ErrNotExist as such.
func readJSON(p string, v any) error {
	data, err := os.ReadFile(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return &IOError{Op: "read", Path: p, Err: err}
	}
	if err := json.Unmarshal(data, v); err != nil {
		return &CorruptError{Path: p, Err: err}
	}
	return nil
}

func readNetwork(p string) (Network, error) {
	var f networkFile
	if err := readJSON(p, &f); err != nil {
		return Network{}, err
	}
	n := Network{Name: f.Name, Domain: f.Domain, Internal: f.Internal, Upstreams: f.Upstreams}
	for _, g := range f.Gateways {
		ip := net.ParseIP(g)
		if ip == nil {
			return Network{}, &CorruptError{Path: p, Err: &InvalidRecordError{Field: "gateways", Value: g, Reason: "not an IP address"}}
		}
		n.Gateways = append(n.Gateways, ip)
	}
	for _, s := range f.Subnets {
		_, sn, err := net.ParseCIDR(s)
		if err != nil {
			return Network{}, &CorruptError{Path: p, Err: &InvalidRecordError{Field: "subnets", Value: s, Reason: "not a CIDR"}}
		}
		n.Subnets = append(n.Subnets, sn)
	}
	n, err := normalizeNetwork(n)
	if err != nil {
		return Network{}, &CorruptError{Path: p, Err: err}
	}
	return n, nil
}

func readRecord(p string) (Record, error) {
	var f recordFile
	if err := readJSON(p, &f); err != nil {
		return Record{}, err
	}
	r := Record{Network: f.Network, ContainerID: f.ContainerID, IfName: f.IfName, Names: f.Names}
	for _, s := range f.IPs {
		ip := net.ParseIP(s)
		if ip == nil {
			return Record{}, &CorruptError{Path: p, Err: &InvalidRecordError{Field: "ips", Value: s, Reason: "not an IP address"}}
		}
		r.IPs = append(r.IPs, ip)
	}
	r, err := normalizeRecord(r)
	if err != nil {
		return Record{}, &CorruptError{Path: p, Err: err}
	}
	return r, nil
}
