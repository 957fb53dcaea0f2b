package main

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// etcd runs inside the ipam scenario's private host netns, on its loopback, so its ports
// cannot clash with anything on the machine.
const (
	etcdBinary     = "etcd"
	etcdPortLow    = 20000
	etcdPortSpan   = 30000
	etcdReadyWait  = 20 * time.Second
	etcdPollPeriod = 50 * time.Millisecond
)

// startEtcd starts Debian's etcd with a temp data dir on random ports of 127.0.0.1 in
// host and waits until its client port accepts connections. stop kills it by PID.
func (b *bench) startEtcd(host ns.NetNS) (endpoint string, stop func(), err error) {
	bin, err := exec.LookPath(etcdBinary)
	if err != nil {
		return "", nil, err
	}
	dir, err := b.lab.dir("etcd")
	if err != nil {
		return "", nil, err
	}
	clientPort := etcdPortLow + rand.IntN(etcdPortSpan)
	peerPort := clientPort + 1
	client := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(clientPort))
	peer := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(peerPort))
	logFile, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		return "", nil, err
	}
	defer logFile.Close()
	cmd := exec.Command(bin,
		"--name", "moorbench", "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "moorbench="+peer, "--log-level", "error", "--logger", "zap")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := host.Do(func(ns.NetNS) error { return cmd.Start() }); err != nil {
		return "", nil, fmt.Errorf("starting etcd: %w", err)
	}
	b.lab.track(cmd)
	stop = func() { b.lab.stop(cmd) }

	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(clientPort))
	deadline := time.Now().Add(etcdReadyWait)
	for {
		// The dial runs on the Do goroutine's thread, hence in host.
		err = host.Do(func(ns.NetNS) error {
			c, err := net.DialTimeout("tcp", addr, etcdPollPeriod)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil {
			return client, stop, nil
		}
		if time.Now().After(deadline) {
			stop()
			log, _ := os.ReadFile(logFile.Name())
			return "", nil, errors.Join(fmt.Errorf("etcd not listening on %s after %s: %w", addr, etcdReadyWait, err), errors.New(string(log)))
		}
		time.Sleep(etcdPollPeriod)
	}
}
