package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/moornet/moor/plugins/etcdclient"
	"github.com/moornet/moor/plugins/etcdconf"
)

// etcd tuning.
const (
	DefaultEtcdBinary = "/usr/bin/etcd"
	etcdClientPort    = 2379
	etcdPeerPort      = 2380
	etcdReadyTimeout  = 30 * time.Second
	etcdProbeTimeout  = 500 * time.Millisecond
	etcdProbeEvery    = 100 * time.Millisecond
	etcdDialTimeout   = 2 * time.Second
)

// Endpoints are the client URLs of the lab's etcd members.
func (s *State) Endpoints() []string {
	var out []string
	for _, m := range s.Members {
		out = append(out, m.ClientURL)
	}
	return out
}

// planEtcd fills the members: one on the router address, or three below it.
func (s *State) planEtcd(dataRoot string) {
	u := mustPrefix(s.Spec.Underlay)
	for i := range s.Spec.Etcd.Members {
		addr := topAddr(u, 1)
		if s.Spec.Etcd.Members > 1 {
			addr = topAddr(u, 2+i)
		}
		m := Member{
			Name:      fmt.Sprintf("m%d", i),
			Addr:      addr.String(),
			ClientURL: fmt.Sprintf("http://%s:%d", addr, etcdClientPort),
			PeerURL:   fmt.Sprintf("http://%s:%d", addr, etcdPeerPort),
			DataDir:   filepath.Join(dataRoot, fmt.Sprintf("m%d", i)),
		}
		s.Members = append(s.Members, m)
	}
}

// startEtcd starts every member that is not running and waits for a quorum to answer.
func (s *State) startEtcd(ctx context.Context) error {
	var cluster []string
	for _, m := range s.Members {
		cluster = append(cluster, m.Name+"="+m.PeerURL)
	}
	for i := range s.Members {
		m := &s.Members[i]
		if m.Proc.Alive() {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(m.DataDir), dirMode); err != nil {
			return err
		}
		p, err := start(s.Netns, m.DataDir+".log", nil, s.Etcd,
			"--name", m.Name,
			"--data-dir", m.DataDir,
			"--listen-client-urls", m.ClientURL,
			"--advertise-client-urls", m.ClientURL,
			"--listen-peer-urls", m.PeerURL,
			"--initial-advertise-peer-urls", m.PeerURL,
			"--initial-cluster", strings.Join(cluster, ","),
			"--initial-cluster-state", "new",
			"--initial-cluster-token", "moor-lab-"+s.Name,
		)
		if err != nil {
			return err
		}
		s.mu.Lock()
		m.Proc = p
		s.mu.Unlock()
		if err := s.save(); err != nil {
			return err
		}
	}
	return s.waitEtcd(ctx)
}

// stopEtcd stops every member (SIGTERM, then SIGKILL).
func (s *State) stopEtcd() {
	for _, m := range s.Members {
		m.Proc.Stop()
	}
}

// Client returns an etcd client of the lab that dials from inside the lab's namespace.
// The caller closes it.
func (s *State) Client() (*clientv3.Client, error) {
	return etcdclient.New(etcdconf.Config{Endpoints: s.Endpoints(), DialTimeout: etcdDialTimeout, Dial: dialer(s.Netns)})
}

func (s *State) waitEtcd(ctx context.Context) error {
	cli, err := s.Client()
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, max(etcdReadyTimeout, s.StartBudget))
	defer cancel()
	for {
		pctx, pcancel := context.WithTimeout(ctx, etcdProbeTimeout)
		_, err := cli.Get(pctx, "ready")
		pcancel()
		if err == nil {
			return nil
		}
		for _, m := range s.Members {
			if !m.Proc.Alive() {
				log, _ := os.ReadFile(m.Proc.Log)
				return fmt.Errorf("etcd member %s exited: %s", m.Name, tail(string(log)))
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("etcd at %s not ready: %w", strings.Join(s.Endpoints(), ","), err)
		case <-time.After(etcdProbeEvery):
		}
	}
}

// tail is the end of a log, for error messages.
func tail(s string) string {
	const keep = 2000
	if len(s) > keep {
		return "..." + s[len(s)-keep:]
	}
	return s
}
