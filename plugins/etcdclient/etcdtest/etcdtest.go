// Package etcdtest starts a throwaway etcd server for tests: Debian's etcd binary on
// 127.0.0.1 with free ports and a temporary data directory, optionally with TLS and
// client-certificate authentication, killed by PID when the test ends. Tests skip when
// the binary is missing.
package etcdtest

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Binary is where Debian's etcd-server package installs etcd.
const Binary = "/usr/bin/etcd"

const (
	readyTimeout = 30 * time.Second
	probeTimeout = 500 * time.Millisecond
	probeEvery   = 100 * time.Millisecond
)

// Server is a running etcd.
type Server struct {
	Endpoint string
	// TLS client files (empty without TLS).
	CertFile, KeyFile, CAFile string
	cmd                       *exec.Cmd
	exited                    chan struct{}
	log                       string
}

// Options for Start.
type Options struct {
	// TLS serves https with a generated CA and requires client certificates.
	TLS bool
	// NetNS, when set, runs etcd inside that network namespace (its 127.0.0.1), for tests
	// whose plugins run there; Client then cannot reach it from the test process.
	NetNS ns.NetNS
}

// Start runs etcd until the test ends (or Stop). It fails the test if etcd does not
// answer within 30 s, and skips it if the binary is missing.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	bin := Binary
	if _, err := os.Stat(bin); err != nil {
		var lookErr error
		if bin, lookErr = exec.LookPath("etcd"); lookErr != nil {
			t.Skipf("etcd binary not found (%s: %v); install etcd-server", Binary, err)
		}
	}
	dir := t.TempDir()
	clientPort, peerPort := freePort(t), freePort(t)
	scheme := "http"
	s := &Server{exited: make(chan struct{}), log: filepath.Join(dir, "etcd.log")}
	var tlsArgs []string
	if opts.TLS {
		scheme = "https"
		files := writeCerts(t, dir)
		s.CertFile, s.KeyFile, s.CAFile = files.clientCert, files.clientKey, files.ca
		tlsArgs = []string{"--cert-file", files.serverCert, "--key-file", files.serverKey,
			"--trusted-ca-file", files.ca, "--client-cert-auth"}
	}
	s.Endpoint = fmt.Sprintf("%s://127.0.0.1:%d", scheme, clientPort)
	peer := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	args := append([]string{
		"--name", "moortest",
		"--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", s.Endpoint,
		"--advertise-client-urls", s.Endpoint,
		"--listen-peer-urls", peer,
		"--initial-advertise-peer-urls", peer,
		"--initial-cluster", "moortest=" + peer,
		"--initial-cluster-state", "new",
	}, tlsArgs...)
	logFile, err := os.Create(s.log)
	if err != nil {
		t.Fatal(err)
	}
	s.cmd = exec.Command(bin, args...)
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	start := s.cmd.Start
	ready := s.waitReady
	if opts.NetNS != nil {
		// The child inherits the namespace of the locked thread that forks it.
		start = func() error { return opts.NetNS.Do(func(ns.NetNS) error { return s.cmd.Start() }) }
		ready = func() error { return s.waitHealthIn(opts.NetNS, clientPort) }
	}
	if err := start(); err != nil {
		t.Fatalf("starting etcd: %v", err)
	}
	go func() { _ = s.cmd.Wait(); _ = logFile.Close(); close(s.exited) }()
	t.Cleanup(s.Stop)
	if err := ready(); err != nil {
		out, _ := os.ReadFile(s.log)
		t.Fatalf("etcd at %s not ready: %v\n%s", s.Endpoint, err, out)
	}
	return s
}

// Stop kills etcd (by PID) and waits for it to exit. Calling it twice is fine.
func (s *Server) Stop() {
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
}

// Client returns a client of the server, closed when the test ends.
func (s *Server) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := s.newClient()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

func (s *Server) newClient() (*clientv3.Client, error) {
	cfg := clientv3.Config{Endpoints: []string{s.Endpoint}, DialTimeout: probeTimeout, Logger: zap.NewNop()}
	if s.CAFile != "" {
		info := transport.TLSInfo{CertFile: s.CertFile, KeyFile: s.KeyFile, TrustedCAFile: s.CAFile}
		tlsCfg, err := info.ClientConfig()
		if err != nil {
			return nil, err
		}
		cfg.TLS = tlsCfg
	}
	return clientv3.New(cfg)
}

func (s *Server) waitReady() error {
	cli, err := s.newClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	deadline := time.Now().Add(readyTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
		_, err := cli.Get(ctx, "ready")
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("etcd exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(probeEvery)
	}
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	n, _ := strconv.Atoi(port)
	return n
}

// waitHealthIn polls etcd's /health over plain HTTP from inside netns (the socket is made
// on the locked thread, so it lives there), until it answers healthy or readyTimeout.
func (s *Server) waitHealthIn(netns ns.NetNS, port int) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		var body []byte
		err := netns.Do(func(ns.NetNS) error {
			c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), probeTimeout)
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(probeTimeout))
			if _, err := io.WriteString(c, "GET /health HTTP/1.0\r\n\r\n"); err != nil {
				return err
			}
			body, err = io.ReadAll(c)
			return err
		})
		if err == nil && strings.Contains(string(body), `"health":"true"`) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no healthy answer in %s: %v %s", readyTimeout, err, body)
		}
		time.Sleep(probeEvery)
	}
}
