package runtimes

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/moornet/moor/plugins/plugintest"
)

// ctr scenario: `ctr run --cni` reads its CNI config from the fixed /etc/cni/net.d and
// /opt/cni/bin and has no flags for them, so it runs in a private mount namespace
// (unshare -m) where moor's directories are bind-mounted over those paths.

// Where ctr (go-cni's defaults) looks for CNI configs and plugins.
const (
	ctrCNIBin  = "/opt/cni/bin"
	ctrCNIConf = "/etc/cni/net.d"
	// shortIDLen is the length of the short container ID moor-dns registers.
	shortIDLen = 12
)

// graftScript bind-mounts $1 over /opt/cni/bin and $2 over /etc/cni/net.d, inside the
// private mount namespace unshare made, then runs the rest of its arguments.
const graftScript = `set -e
mount --make-rprivate /
mount --bind "$1" ` + ctrCNIBin + `
mount --bind "$2" ` + ctrCNIConf + `
shift 2
exec "$@"`

var inetAddr = regexp.MustCompile(`inet (\d+\.\d+\.\d+\.\d+)/`)

// mountTargets makes sure the bind-mount targets exist, creating what is missing and
// removing it again when the test ends, so the host is left as found.
func mountTargets(t *testing.T, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		var created []string
		for p := d; !fileExists(p); p = filepath.Dir(p) {
			created = append(created, p)
		}
		if err := os.MkdirAll(d, dirMode); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			for _, p := range created { // deepest first
				if err := os.Remove(p); err != nil {
					t.Errorf("removing %s, which the test created: %v", p, err)
				}
			}
		})
	}
}

func TestCtrRunCNI(t *testing.T) {
	unshare := tool(t, "unshare")
	watchHost(t)
	n := newMoorNet(t)
	c := sharedContainerd(t)
	confDir := t.TempDir()
	n.write(confDir, "10-"+n.Name+".conflist")
	mountTargets(t, ctrCNIBin, ctrCNIConf)

	// go-cni's container ID is <namespace>-<id>; moor-dns registers its first 12 characters.
	id := "c" + plugintest.RandomSuffix()
	short := (ctrNamespace + "-" + id)[:shortIDLen]
	gw := n.Gateway.String()
	script := fmt.Sprintf("ip -4 -o addr show dev eth0 && nslookup %s %s && ping -c 1 -W 2 %s", short, gw, gw)
	t.Cleanup(func() {
		// Only when the run failed half-way: ctr run --rm removes its container.
		_, _ = c.ctrCmd(ctrNamespace, "tasks", "kill", "--signal", "SIGKILL", id)
		_, _ = c.ctrCmd(ctrNamespace, "containers", "delete", id)
	})
	out, err := command(nil, unshare, "--mount", "sh", "-c", graftScript, "sh", suite.binDir, confDir,
		c.ctr, "--address", c.sock, "--namespace", ctrNamespace, "run", "--cni", "--rm",
		"--fifo-dir", filepath.Join(c.dir, "fifo"), "--runc-root", c.runcRoot,
		busyboxImage, id, "sh", "-c", script)
	if err != nil {
		t.Fatalf("ctr run --cni: %v", err)
	}
	m := inetAddr.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no IPv4 address on the container's eth0:\n%s", out)
	}
	n.inSubnet("ctr container", m[1])
	// busybox nslookup prints the answer as "Address: <ip>" after the server's lines.
	if !strings.Contains(out, "Name:\t"+short) || !strings.Contains(out, "Address: "+m[1]) {
		t.Errorf("the container did not resolve its short ID %s to %s:\n%s", short, m[1], out)
	}
	// ctr run --rm ran DEL (with an empty netns: the task is gone by then).
	n.noAttachments("ctr run --rm")
}
