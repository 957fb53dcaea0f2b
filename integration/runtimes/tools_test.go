package runtimes

import (
	"bytes"
	"context"
	"fmt"
	"go/build"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/miekg/dns"
)

// Bounds of one runtime command and of one network probe; a hung runtime fails the
// test instead of the run.
const (
	cmdTimeout   = 90 * time.Second
	probeTimeout = 3 * time.Second
	dnsPort      = "53"
)

// tool returns the path of a program the scenario needs (lookTool), or skips the test
// naming what is missing.
func tool(t *testing.T, name string) string {
	t.Helper()
	p := lookTool(name)
	if p == "" {
		t.Skipf("%s is not installed (scripts/runtime-deps.sh installs it)", name)
	}
	return p
}

// lookTool finds a program in PATH, then in the Go bin directory (where
// scripts/runtime-deps.sh installs crictl and cnitool); "" when it is nowhere.
func lookTool(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	dirs := []string{os.Getenv("GOBIN")}
	for _, gp := range filepath.SplitList(build.Default.GOPATH) {
		dirs = append(dirs, filepath.Join(gp, "bin"))
	}
	for _, d := range dirs {
		if d == "" {
			continue
		}
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// command runs a program with extra environment, bounded by cmdTimeout, and returns its
// stdout; the error carries stderr.
func command(env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w\nstdout: %s\nstderr: %s", filepath.Base(name), strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// lookupA asks server (the network's gateway) from inside the netns at nsPath for the A
// records of name; it returns the sorted addresses and the rcode.
func lookupA(nsPath, server, name string) ([]string, int, error) {
	netns, err := ns.GetNS(nsPath)
	if err != nil {
		return nil, -1, err
	}
	defer netns.Close()
	var resp *dns.Msg
	err = netns.Do(func(ns.NetNS) error {
		c := dns.Client{Net: "udp", Timeout: probeTimeout}
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(name), dns.TypeA)
		var err error
		resp, _, err = c.Exchange(m, net.JoinHostPort(server, dnsPort))
		return err
	})
	if err != nil {
		return nil, -1, fmt.Errorf("asking %s for %s: %w", server, name, err)
	}
	var ips []string
	for _, rr := range resp.Answer {
		if a, ok := rr.(*dns.A); ok {
			ips = append(ips, a.A.String())
		}
	}
	sort.Strings(ips)
	return ips, resp.Rcode, nil
}

// wantName fails the test unless name resolves to exactly ip from inside nsPath.
func wantName(t *testing.T, nsPath, server, name, ip string) {
	t.Helper()
	got, rcode, err := lookupA(nsPath, server, name)
	if err != nil || rcode != dns.RcodeSuccess || len(got) != 1 || got[0] != ip {
		t.Errorf("%s: got %v rcode %d err %v, want %s", name, got, rcode, err, ip)
	}
}

// wantNoName fails the test unless name is NXDOMAIN from inside nsPath.
func wantNoName(t *testing.T, nsPath, server, name string) {
	t.Helper()
	got, rcode, err := lookupA(nsPath, server, name)
	if err != nil || rcode != dns.RcodeNameError {
		t.Errorf("%s: got %v rcode %d err %v, want NXDOMAIN", name, got, rcode, err)
	}
}

// httpGet fetches http://addr/index.html from the host and returns the body.
func httpGet(addr string) (string, error) {
	c := http.Client{Timeout: probeTimeout}
	resp, err := c.Get("http://" + addr + "/index.html")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", addr, resp.Status)
	}
	return string(body), nil
}

// wantServed fails the test unless the busybox image's page is served at addr. The
// server in the container may still be starting: it retries until probeTimeout.
func wantServed(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(probeTimeout)
	for {
		body, err := httpGet(addr)
		if err == nil && body == indexBody {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("http://%s: body %q err %v, want the image's page", addr, body, err)
			return
		}
		time.Sleep(pollInterval)
	}
}

// Published ports come from below the kernel's ephemeral range (32768-60999 by default),
// so a port another test binds with :0 meanwhile can never be the one picked here.
const (
	publishPortMin   = 20000
	publishPortSpan  = 10000
	publishPortTries = 100
)

// freePort returns a TCP port nothing listens on now, for a published port.
func freePort(t *testing.T) int {
	t.Helper()
	for range publishPortTries {
		port := publishPortMin + rand.IntN(publishPortSpan)
		l, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
		if err == nil {
			l.Close()
			return port
		}
	}
	t.Fatalf("no free port in %d-%d", publishPortMin, publishPortMin+publishPortSpan)
	return 0
}

func hostPort(ip string, port int) string { return net.JoinHostPort(ip, strconv.Itoa(port)) }
