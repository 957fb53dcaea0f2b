// Package store defines the small interface behind which moor-ipam keeps its address
// reservations, and the types that cross it.
//
// A Store holds the reservations of one network. Each reservation belongs to an
// attachment, identified by Key (container ID and interface name, as in the CNI spec),
// and records what a CLI needs to list containers: netns path, container name, pod
// namespace, MAC and creation time.
//
// The allocation itself is a store operation (Allocate): "for this key, reserve these
// static addresses and one address from each of these pools, atomically". Doing it inside
// the store's transaction is what makes it safe across concurrent processes and hosts:
// either every address of the request is reserved and the attachment recorded, or
// nothing changes. Allocate is idempotent per key: a key that already holds addresses
// gets them back unchanged, whatever the request.
//
// Implementations: package local (bbolt file per network, the default), package etcd
// (clusters), package memory (tests). All three share the allocation algorithm of package
// kv and pass the contract suite in package storetest.
//
// What this package does not do: parse configs, pick the gateway, build CNI results
// (package allocator does), or map errors to CNI codes (its error types carry a CNICode
// method; the plugin framework maps them at the edge).
package store

import (
	"context"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/moornet/moor/plugins/namehash"
)

// Store keeps the address reservations of one network. Every method is safe for
// concurrent use by several goroutines and, for the persistent implementations, by
// several processes (and hosts, for etcd).
type Store interface {
	// Allocate reserves, atomically, every address of req for req.Attachment.Key and
	// records the attachment. If the key already holds addresses it returns that
	// attachment unchanged. Errors: *InUseError (a static or requested address is held
	// by another key), *ExhaustedError (a pool has no free address), *OutOfRangeError,
	// *UnavailableError (lock or store not reachable in time), *Error (store failure).
	// On any error nothing is reserved.
	Allocate(ctx context.Context, req AllocRequest) (Attachment, error)
	// Get returns the attachment of key, or an error wrapping ErrNotFound.
	Get(ctx context.Context, key Key) (Attachment, error)
	// Release frees every address of key and forgets the attachment. It returns the
	// addresses freed; an unknown key (or a second release) is not an error and returns nil.
	Release(ctx context.Context, key Key) ([]netip.Prefix, error)
	// List returns every attachment, sorted by container ID then interface name.
	List(ctx context.Context) ([]Attachment, error)
	// GC releases every attachment whose key is not in valid and returns them.
	GC(ctx context.Context, valid []Key) ([]Attachment, error)
	// Status returns nil when the store can be read and written now.
	Status(ctx context.Context) error
	// Destroy deletes the network's whole state: every reservation and whatever the
	// store keeps besides (the local store's file and its lock, every key of the etcd
	// prefix). Nothing there is not an error. The store reads as empty afterwards and a
	// later Allocate starts afresh (round robin from the start of each range). With
	// opts.IfUnused it changes nothing (and returns nil) while any attachment holds
	// addresses, checked atomically with the deletion.
	Destroy(ctx context.Context, opts DestroyOptions) error
	// Close releases the store's resources (connections); it does not delete data.
	Close() error
}

// DeferredAllocator is a Store whose allocation can return before it is durable (package
// kv's Store, on every backend).
type DeferredAllocator interface {
	// AllocateDeferred is Allocate, except that the allocation is durable only once
	// commit returned nil: commit must be called exactly once, and success reported to
	// anyone only after it (an error from it: nothing was reserved). Until then other
	// writers of the store may wait. held reports that the key already held the returned
	// attachment (read in the same transaction).
	AllocateDeferred(ctx context.Context, req AllocRequest) (att Attachment, held bool, commit func() error, err error)
}

// DestroyOptions tune Store.Destroy.
type DestroyOptions struct {
	// IfUnused destroys only a store where no attachment holds addresses (a failed
	// first ADD removing the state it created, without racing a concurrent ADD).
	IfUnused bool
}

// Key identifies an attachment: the container and the interface name inside it.
type Key struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
}

// String returns "containerID/ifName".
func (k Key) String() string { return k.ContainerID + keySep + k.IfName }

const keySep = "/"

// Validate checks that both parts are set and contain no separator or control
// character, so that a key maps to exactly one storage path.
func (k Key) Validate() error {
	for _, part := range []struct{ name, value string }{
		{"container ID", k.ContainerID}, {"interface name", k.IfName},
	} {
		if part.value == "" {
			return &InvalidKeyError{Key: k, Reason: part.name + " is empty"}
		}
		if strings.ContainsAny(part.value, keySep) || strings.IndexFunc(part.value, isControl) >= 0 {
			return &InvalidKeyError{Key: k, Reason: part.name + " contains '/' or a control character"}
		}
	}
	return nil
}

func isControl(r rune) bool { return r < ' ' || r == 0x7f }

// ParseKey is the inverse of Key.String.
func ParseKey(s string) (Key, bool) {
	id, ifname, ok := strings.Cut(s, keySep)
	return Key{ContainerID: id, IfName: ifname}, ok
}

// Attachment is one container interface and the addresses reserved for it.
type Attachment struct {
	Key
	Netns         string    `json:"netns,omitempty"`
	ContainerName string    `json:"containerName,omitempty"`
	PodNamespace  string    `json:"podNamespace,omitempty"`
	MAC           string    `json:"mac,omitempty"`
	Created       time.Time `json:"created"`
	// IPs are the reserved addresses, each with the prefix length of its subnet, in the
	// order of the request: one per pool, then the static addresses.
	IPs []netip.Prefix `json:"ips"`
}

// Range is one contiguous block of addresses a pool hands out from.
type Range struct {
	// Subnet gives the prefix length of the addresses handed out.
	Subnet netip.Prefix
	// First and Last bound the block (inclusive); both lie in Subnet.
	First, Last netip.Addr
	// Skip lists addresses never handed out even when inside the block: the gateway,
	// and for IPv4 the network and broadcast addresses.
	Skip []netip.Addr
}

// Contains reports whether a lies in [First, Last].
func (r Range) Contains(a netip.Addr) bool {
	return a.BitLen() == r.First.BitLen() && r.First.Compare(a) <= 0 && a.Compare(r.Last) <= 0
}

// Skips reports whether a is one of the addresses never handed out.
func (r Range) Skips(a netip.Addr) bool {
	for _, s := range r.Skip {
		if s == a {
			return true
		}
	}
	return false
}

// String is "10.0.0.0/24" when the block spans the subnet's usable addresses and
// "10.0.0.0/24 (10.0.0.10-10.0.0.20)" otherwise.
func (r Range) String() string {
	first, last := usableBounds(r.Subnet)
	if r.First == first && r.Last == last {
		return r.Subnet.String()
	}
	return fmt.Sprintf("%s (%s-%s)", r.Subnet, r.First, r.Last)
}

// Size is the number of addresses the range can hand out: the block minus the
// skipped addresses inside it.
func (r Range) Size() Count {
	n := countOfAddr(r.Last).Sub(countOfAddr(r.First)).Add(CountOf(1))
	seen := map[netip.Addr]bool{}
	for _, s := range r.Skip {
		if r.Contains(s) && !seen[s] {
			seen[s] = true
			n = n.Sub(CountOf(1))
		}
	}
	return n
}

// usableBounds returns the default block of a subnet, as host-local chooses it: network
// address + 1 to the last address (IPv6) or the last address - 1 (IPv4, the broadcast).
func usableBounds(p netip.Prefix) (first, last netip.Addr) {
	p = p.Masked()
	first = p.Addr().Next()
	last = LastAddr(p)
	if p.Addr().Is4() {
		last = last.Prev()
	}
	return first, last
}

// LastAddr returns the highest address of p (the IPv4 broadcast address).
func LastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// Pool is a set of ranges one address is taken from (a host-local "range set").
type Pool struct {
	Ranges []Range
	// Requested, when valid, is the one address to reserve from this pool instead of the
	// next free one. It must lie in one of Ranges and not be skipped.
	Requested netip.Addr
}

// String names the pool in messages: its ranges joined by ", ".
func (p Pool) String() string {
	names := make([]string, len(p.Ranges))
	for i, r := range p.Ranges {
		names[i] = r.String()
	}
	return strings.Join(names, ", ")
}

// ID is a stable identifier of the pool's blocks (subnet and bounds of each range, in
// order). Stores keep the pool's cursor and free list under it, so two configs with the
// same ranges share them.
func (p Pool) ID() string {
	var b []byte
	for _, r := range p.Ranges {
		b = fmt.Appendf(b, "%s %s %s;", r.Subnet, r.First, r.Last)
	}
	sum := namehash.Sum256(b)
	return hex.EncodeToString(sum[:])[:poolIDLen]
}

const poolIDLen = 16

// Size is the number of addresses the pool can hand out.
func (p Pool) Size() Count {
	var n Count
	for _, r := range p.Ranges {
		n = n.Add(r.Size())
	}
	return n
}

// Contains reports whether a lies in one of the pool's ranges.
func (p Pool) Contains(a netip.Addr) bool {
	for _, r := range p.Ranges {
		if r.Contains(a) {
			return true
		}
	}
	return false
}

// AllocRequest is what Allocate reserves for one attachment.
type AllocRequest struct {
	// Attachment names the key and carries the metadata to record; its IPs are ignored.
	// A zero Created is set to the time of the allocation.
	Attachment Attachment
	// Pools each give one address (the requested one, or the next free one).
	Pools []Pool
	// Static addresses are reserved exactly as given (config `addresses`, or requested
	// addresses of a config without ranges).
	Static []netip.Prefix
}
