package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Files and modes of a lab directory.
const (
	stateFile = "state.json"
	dirMode   = 0o700
	fileMode  = 0o600
	// reservedTop: the underlay's broadcast address, the router (the lab netns) and up
	// to three etcd members sit at the top of the underlay subnet.
	reservedTop = 5
)

// State is what a lab made, written to <dir>/state.json after every step so that Down
// removes exactly that, also after a failed Up.
type State struct {
	Name   string `json:"name"`
	Dir    string `json:"dir"`
	BinDir string `json:"binDir"`
	Etcd   string `json:"etcdBinary"`
	Spec   Spec   `json:"spec"`
	// Netns is the lab's own namespace: the underlay bridge, the router address, etcd.
	Netns      string      `json:"netns"`
	Router     string      `json:"router"`
	Members    []Member    `json:"etcdMembers"`
	Hosts      []*Host     `json:"hosts"`
	Containers []Container `json:"containers"`
	// StartBudget is Options.StartBudget (0: the default deadlines).
	StartBudget time.Duration `json:"startBudget,omitempty"`

	mu sync.Mutex
}

// Member is one etcd member.
type Member struct {
	Name      string `json:"name"`
	Addr      string `json:"addr"`
	ClientURL string `json:"clientURL"`
	PeerURL   string `json:"peerURL"`
	DataDir   string `json:"dataDir"`
	Proc      Proc   `json:"proc"`
}

// Host is one host of the lab.
type Host struct {
	Name     string `json:"name"`
	HostID   string `json:"hostID"`
	Netns    string `json:"netns"`
	Underlay string `json:"underlay"`
	Dir      string `json:"dir"`
	Agent    Proc   `json:"agent"`
	DNS      Proc   `json:"dns"`
	// Left is set once the host released its leases (LeaveHost).
	Left bool `json:"left,omitempty"`
}

// Container is one container attached to one or more networks.
type Container struct {
	Name        string       `json:"name"`
	Host        string       `json:"host"`
	Netns       string       `json:"netns"`
	ContainerID string       `json:"containerID"`
	Attachments []Attachment `json:"attachments"`
}

// NetnsPath is the path of the container's network namespace.
func (c Container) NetnsPath() string { return netnsPath(c.Netns) }

// Attachment is a container's interface on a network.
type Attachment struct {
	Network string `json:"network"`
	IfName  string `json:"ifName"`
	IP      string `json:"ip"`
	Gateway string `json:"gateway"`
}

// stateDir is the directory of the lab named name under root.
func stateDir(root, name string) string { return filepath.Join(root, name) }

// save writes the state atomically.
func (s *State) save() error {
	s.mu.Lock()
	data, err := json.MarshalIndent(s, "", "  ")
	s.mu.Unlock()
	if err != nil {
		return err
	}
	tmp := filepath.Join(s.Dir, stateFile+".tmp")
	if err := os.WriteFile(tmp, data, fileMode); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(s.Dir, stateFile))
}

// ErrNoLab is returned by Open for a lab that has no state file.
var ErrNoLab = errors.New("no such lab")

func loadState(dir string) (*State, error) {
	data, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNoLab, dir)
	}
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("lab state %s: %w", dir, err)
	}
	return &s, nil
}

// host returns the named host.
func (s *State) host(name string) (*Host, error) {
	for _, h := range s.Hosts {
		if h.Name == name {
			return h, nil
		}
	}
	return nil, fmt.Errorf("lab %s has no host %q", s.Name, name)
}

// underlayAddr is the address of host number i (0-based) on the underlay.
func underlayAddr(u netip.Prefix, i int) netip.Addr {
	a := u.Addr()
	for range i + 1 {
		a = a.Next()
	}
	return a
}

// topAddr is the k-th address below the broadcast address (k = 1: the router).
func topAddr(u netip.Prefix, k int) netip.Addr {
	a := u.Addr()
	for range 1<<(32-u.Bits()) - 1 - k {
		a = a.Next()
	}
	return a
}
