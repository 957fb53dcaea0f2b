package main

// Tests of the moor CLI against real networks. TestMain builds every binary with
// scripts/build.sh into a temp dir (the CNI plugins the CLI execs, and moor itself);
// each test makes a "host" netns (moorcli-h-*) and points the CLI at it with --netns, and
// at its own config, cache, IPAM and DNS directories, so nothing touches the machine.
// The CLI runs in process (cli.Main with buffers); one test runs the binary.

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/moornet/moor/cmd/moor/internal/cli"
	"github.com/moornet/moor/plugins/plugintest"
)

// update rewrites the golden files: go test ./cmd/moor -update
var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// binDir holds the freshly built binaries ("" when not root: kernel tests skip).
var binDir string

const netnsPrefix = "moorcli"

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	// No firewall repair from the DNS sidecars these tests start: tests here plant drift
	// on purpose (CHECK, doctor) and a repair would undo it. The repair tests turn it on.
	os.Setenv("MOOR_FIREWALL_REPAIR", "off")
	if os.Geteuid() == 0 {
		dir, cleanup, err := plugintest.BuildBinaries(filepath.Join("..", ".."), "clitest")
		if err != nil {
			fmt.Println(err)
			return 1
		}
		defer cleanup()
		binDir = dir
	}
	return m.Run()
}

// world is one test's host: a netns and the directories a runtime keeps.
type world struct {
	t                                         *testing.T
	host                                      ns.NetNS
	confDir, dataDir, cacheDir, dnsDir, dnsSk string
	repl                                      []string // old, new pairs for normalize
}

func newWorld(t *testing.T) *world {
	t.Helper()
	if binDir == "" {
		t.Skip("needs root (network namespaces) and the built binaries")
	}
	base := t.TempDir()
	w := &world{
		t: t, host: plugintest.Netns(t, netnsPrefix+"-h"),
		confDir: filepath.Join(base, "net.d"), dataDir: filepath.Join(base, "ipam"),
		cacheDir: filepath.Join(base, "cache"), dnsDir: filepath.Join(base, "dns"),
		dnsSk: filepath.Join(base, "dns.sock"),
	}
	w.repl = []string{w.confDir, "<CONF>", w.dataDir, "<DATA>", w.host.Path(), "<HOSTNS>"}
	err := w.host.Do(func(ns.NetNS) error { return exec.Command("ip", "link", "set", "lo", "up").Run() })
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// moor runs the CLI in process against the world.
func (w *world) moor(args ...string) (stdout, stderr string, code int) {
	full := []string{"--conf-dir", w.confDir, "--cni-path", binDir, "--cache-dir", w.cacheDir, "--netns", w.host.Path()}
	if w.dnsDir != "" { // empty: the host namespace's sidecar, found as moor-dns finds it
		full = append(full, "--dns-dir", w.dnsDir, "--dns-socket", w.dnsSk)
	}
	full = append(full, args...)
	var out, errb bytes.Buffer
	code = cli.Main(full, strings.NewReader(""), &out, &errb)
	return out.String(), errb.String(), code
}

// ok runs the CLI and fails the test unless it exits 0.
func (w *world) ok(args ...string) string {
	w.t.Helper()
	out, errs, code := w.moor(args...)
	if code != 0 {
		w.t.Fatalf("moor %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

// fails runs the CLI and checks the exit code and that stderr mentions something.
func (w *world) fails(code int, mentions string, args ...string) string {
	w.t.Helper()
	out, errs, got := w.moor(args...)
	if got != code || !strings.Contains(errs, mentions) {
		w.t.Fatalf("moor %s: exit %d, stderr %q; want exit %d mentioning %q", strings.Join(args, " "), got, errs, code, mentions)
	}
	return out
}

// container makes a container netns under /run/netns, removed with the test.
func (w *world) container() ns.NetNS { return plugintest.Netns(w.t, netnsPrefix+"-c") }

// name is a netns's name (its file under /run/netns).
func name(n ns.NetNS) string { return filepath.Base(n.Path()) }

// inHost runs a command inside the host netns.
func (w *world) inHost(name string, args ...string) string {
	w.t.Helper()
	var out []byte
	err := w.host.Do(func(ns.NetNS) error {
		var err error
		out, err = exec.Command(name, args...).CombinedOutput()
		return err
	})
	if err != nil {
		w.t.Fatalf("%s %v: %v: %s", name, args, err, out)
	}
	return string(out)
}

// ping sends one ICMP echo from netns to ip.
func ping(netns ns.NetNS, ip string) error { return plugintest.Ping(netns, ip) }

var (
	macRE  = regexp.MustCompile(`\b([0-9a-f]{2}:){5}[0-9a-f]{2}\b`)
	timeRE = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)`)
)

// normalize replaces what differs between runs: the world's paths and names, MACs, times.
func (w *world) normalize(s string) string {
	s = strings.NewReplacer(w.repl...).Replace(s)
	s = macRE.ReplaceAllString(s, "<MAC>")
	return timeRE.ReplaceAllString(s, "<TIME>")
}

// golden compares got with testdata/<name>.golden (rewritten with -update).
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs from the golden file (run with -update after checking):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}
