package records

import (
	"context"
	"fmt"
	"net"

	"github.com/moornet/moor/plugins/codes"
)

// DefaultRoot is where the Local backend keeps its files unless told otherwise.
const DefaultRoot = "/run/moor/dns"

// Network is one network the DNS server serves.
type Network struct {
	// Name is the CNI network name; it is also a directory name in the Local backend.
	Name string
	// Domain is the network's search domain without a trailing dot (for example "dns.moor").
	// Empty means the server's default.
	Domain string
	// Gateways are the addresses the server listens on for this network (port 53 by default).
	Gateways []net.IP
	// Subnets are the client addresses allowed to ask; they also scope which names a client sees.
	Subnets []*net.IPNet
	// Internal networks never forward queries to upstream resolvers.
	Internal bool
	// Upstreams optionally override the host's resolvers for this network ("ip" or "ip:port").
	Upstreams []string
}

// Record is the set of names and addresses one container interface registered on one network.
type Record struct {
	Network     string
	ContainerID string
	IfName      string
	// Names are lowercase dot-separated RFC 1123 names without the domain ("web", "abcdef123456",
	// "pod.ns"). The first one is the primary name, used for PTR answers.
	Names []string
	// IPs are the attachment's addresses (IPv4 and IPv6).
	IPs []net.IP
}

// Key identifies a record inside its network.
func (r Record) Key() RecordKey {
	return RecordKey{Network: r.Network, ContainerID: r.ContainerID, IfName: r.IfName}
}

// RecordKey identifies one record: a container interface on a network.
type RecordKey struct {
	Network, ContainerID, IfName string
}

// String renders the key for messages.
func (k RecordKey) String() string {
	return fmt.Sprintf("network %q container %q interface %q", k.Network, k.ContainerID, k.IfName)
}

// Change tells a watcher what changed since the previous Change. Changes are coalesced:
// several writes to one network may arrive as one Change naming it once.
type Change struct {
	// Networks whose definition or records changed (added, updated or deleted).
	Networks []string
	// All means the watcher must re-read every network (the backend lost track of details).
	All bool
}

// Store keeps networks and records. Implementations are safe for concurrent use by several
// goroutines and, for the Local backend, by several processes.
type Store interface {
	// PutNetwork creates or replaces a network definition.
	PutNetwork(ctx context.Context, n Network) error
	// DeleteNetwork removes a network and every record on it. Deleting a missing network is
	// not an error.
	DeleteNetwork(ctx context.Context, name string) error
	// Put creates or replaces one record (keyed by network, container ID and interface). The
	// network must exist. Names are validated, lowercased and de-duplicated.
	Put(ctx context.Context, r Record) error
	// Delete removes one record. Deleting a missing record is not an error.
	Delete(ctx context.Context, network, containerID, ifName string) error
	// List returns the records of one network, or of every network when network is "".
	// Readable records are returned even when the error reports unreadable ones.
	List(ctx context.Context, network string) ([]Record, error)
	// Networks returns every network definition.
	Networks(ctx context.Context) ([]Network, error)
	// Watch returns a channel of coalesced changes made after the call. The channel is
	// closed when ctx is done or the store is closed. A slow reader never blocks writers.
	Watch(ctx context.Context) (<-chan Change, error)
	// Close releases the store's resources and closes every watch channel.
	Close() error
}

// InvalidNameError reports a name (or network, container ID or interface name) that may not
// be stored.
type InvalidNameError struct {
	Field  string // "name", "network", "containerID", "ifName", "domain", ...
	Value  string
	Reason string
}

func (e *InvalidNameError) Error() string {
	return fmt.Sprintf("invalid %s %q: %s", e.Field, e.Value, e.Reason)
}

// CNICode maps the error to "invalid network config".
func (e *InvalidNameError) CNICode() uint { return codes.InvalidNetworkConfig }

// InvalidRecordError reports a record or network field that is not a name (an address, a
// subnet, an upstream) and is wrong.
type InvalidRecordError struct {
	Field  string
	Value  string
	Reason string
}

func (e *InvalidRecordError) Error() string {
	return fmt.Sprintf("invalid %s %q: %s", e.Field, e.Value, e.Reason)
}

// CNICode maps the error to "invalid network config".
func (e *InvalidRecordError) CNICode() uint { return codes.InvalidNetworkConfig }

// NotFoundError reports a write to a network that does not exist.
type NotFoundError struct {
	Network string
}

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("dns network %q not found in the record store", e.Network)
}

// CNICode maps the error to "store failure": the plugin wrote in the wrong order or the
// network was deleted meanwhile.
func (e *NotFoundError) CNICode() uint { return codes.StoreFailure }

// ConflictError reports a record whose storage slot holds another attachment's record.
type ConflictError struct {
	Want, Have RecordKey
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("record for %s collides with stored record for %s", e.Want, e.Have)
}

// CNICode maps the error to "store failure".
func (e *ConflictError) CNICode() uint { return codes.StoreFailure }

// CorruptError reports a stored file that cannot be parsed or holds invalid data.
type CorruptError struct {
	Path string
	Err  error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("corrupt dns record file %s: %v", e.Path, e.Err)
}

// Unwrap exposes the cause.
func (e *CorruptError) Unwrap() error { return e.Err }

// CNICode maps the error to "store failure".
func (e *CorruptError) CNICode() uint { return codes.StoreFailure }

// LockError reports that a network's writer lock was not obtained before the context ended.
type LockError struct {
	Network string
	Err     error
}

func (e *LockError) Error() string {
	return fmt.Sprintf("lock dns network %q: %v", e.Network, e.Err)
}

// Unwrap exposes the cause.
func (e *LockError) Unwrap() error { return e.Err }

// CNICode maps the error to "try again later".
func (e *LockError) CNICode() uint { return codes.TryAgainLater }

// IOError reports a store operation that failed on the file system.
type IOError struct {
	Op   string
	Path string
	Err  error
}

func (e *IOError) Error() string {
	return fmt.Sprintf("dns store %s %s: %v", e.Op, e.Path, e.Err)
}

// Unwrap exposes the cause.
func (e *IOError) Unwrap() error { return e.Err }

// CNICode maps the error to "store failure".
func (e *IOError) CNICode() uint { return codes.StoreFailure }
