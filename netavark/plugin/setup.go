package plugin

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/moornet/moor/netavark/api"
	"github.com/moornet/moor/netavark/translate"
	"github.com/moornet/moor/plugins/firewall"
	"github.com/moornet/moor/plugins/flock"
	"github.com/moornet/moor/plugins/statefs"
)

// attachment is one setup or teardown request, translated and ready for libcni.
type attachment struct {
	cfg  Config
	conf *translate.Conf
	rt   *libcni.RuntimeConf
	cni  *libcni.CNIConfig
}

func newAttachment(cfg Config, netns string, x api.Exec) (*attachment, error) {
	conf, err := translate.Build(x.Network, translate.Options{MoorAllocates: translate.MoorAllocates(x), DataDir: cfg.ipamDir()})
	if err != nil {
		return nil, err
	}
	rt, err := translate.RuntimeConf(x, netns, conf)
	if err != nil {
		return nil, err
	}
	// libcni writes its result cache itself: the directories it writes into are checked
	// (made by root, writable by nobody else) before it runs.
	for _, dir := range []string{cfg.cacheDir(), filepath.Join(cfg.cacheDir(), "results")} {
		if err := statefs.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
	}
	return &attachment{cfg: cfg, conf: conf, rt: rt, cni: libcni.NewCNIConfigWithCacheDir(cfg.CNIPath, cfg.cacheDir(), nil)}, nil
}

// lock takes the network's lock; the returned func releases it.
func (a *attachment) lock() (func(), error) { return lockNetwork(a.cfg, a.conf.List.Name) }

// lockNetwork takes the lock of the network name; the returned func releases it.
func lockNetwork(cfg Config, name string) (func(), error) {
	ctx, cancel := context.WithTimeout(context.Background(), LockTimeout)
	defer cancel()
	unlock, err := flock.Lock(ctx, cfg.lockFile(name), flock.Options{Timeout: LockTimeout})
	if err != nil {
		return nil, fmt.Errorf("network %s is busy (another create, setup or teardown holds %s): %w", name, cfg.lockFile(name), err)
	}
	return unlock, nil
}

func (a *attachment) add() (*current.Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	res, err := a.cni.AddNetworkList(ctx, a.conf.List, a.rt)
	if err != nil {
		return nil, err
	}
	return current.NewResultFromResult(res)
}

func (a *attachment) del() error {
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	return a.cni.DelNetworkList(ctx, a.conf.List, a.rt)
}

// Setup attaches the container in netns to the request's network (CNI ADD of the whole
// list) and reports its interface. On any failure it runs DEL first, so that nothing of
// the attempt stays (and, when it was the only container, nothing of the network).
func Setup(cfg Config, netns string, x api.Exec) (api.StatusBlock, error) {
	a, err := newAttachment(cfg, netns, x)
	if err != nil {
		return api.StatusBlock{}, err
	}
	unlock, err := a.lock()
	if err != nil {
		return api.StatusBlock{}, err
	}
	defer unlock()
	if err := adopt(cfg, x.Network); err != nil {
		return api.StatusBlock{}, err
	}
	// Podman binds the host ports it publishes before it runs netavark: its sockets are
	// its reservations, which moor-bridge's host-port check must not count as conflicts
	// (the environment reaches moor-bridge through libcni).
	if len(x.PortMappings) > 0 {
		os.Setenv(firewall.EnvPortReservers, runtimePIDs())
	}
	st, err := a.setup()
	if err != nil {
		if rbErr := a.teardown(); rbErr != nil {
			err = fmt.Errorf("%w; undoing it failed too: %v", err, rbErr)
		}
		return api.StatusBlock{}, fmt.Errorf("setup of %s on network %s: %w", x.ContainerID, x.Network.Name, err)
	}
	return st, nil
}

func (a *attachment) setup() (api.StatusBlock, error) {
	res, err := a.add()
	if err != nil {
		return api.StatusBlock{}, err
	}
	return translate.Status(res, a.rt.IfName)
}

// Teardown detaches the container (CNI DEL of the whole list, with libcni's cached result
// as prevResult). It is repeatable and works when the netns is gone. When the network's
// bridge is left without ports, the network goes too (see the package doc).
func Teardown(cfg Config, netns string, x api.Exec) error {
	a, err := newAttachment(cfg, netns, x)
	if err != nil {
		return err
	}
	unlock, err := a.lock()
	if err != nil {
		return err
	}
	defer unlock()
	if err := a.teardown(); err != nil {
		return fmt.Errorf("teardown of %s on network %s: %w", x.ContainerID, x.Network.Name, err)
	}
	return nil
}

func (a *attachment) teardown() error {
	if err := a.del(); err != nil {
		return err
	}
	return removeIfUnused(a.cfg, a.conf)
}

// runtimePIDs are netavark (this plugin's parent) and the process that ran it (podman),
// as EnvPortReservers wants them.
func runtimePIDs() string {
	ppid := os.Getppid()
	pids := []string{strconv.Itoa(ppid)}
	if gp := parentOf(ppid); gp > 1 {
		pids = append(pids, strconv.Itoa(gp))
	}
	return strings.Join(pids, ",")
}

// parentOf returns the parent PID of pid (0 when unknown).
func parentOf(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "PPid:"); ok {
			p, _ := strconv.Atoi(strings.TrimSpace(v))
			return p
		}
	}
	return 0
}
