package integration

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/miekg/dns"

	"github.com/moornet/moor/dns/server"
	"github.com/moornet/moor/plugins/firewall"
)

// Security properties of the suite (threat model and the full list: docs/security.md).

// Every state file a plugin or the sidecar creates is for root alone: directories 0700,
// files, sockets and locks 0600, nothing readable by group or others (the IPAM database
// and its lock, the DNS records, the sidecar's pid file and control socket, the logs, the
// host-wide firewall lock). The state lives under directories the plugins create
// themselves, so their modes are the plugins' own. A container query of type ANY is
// refused (no amplification).
func TestSecurityStateFileModes(t *testing.T) {
	root := filepath.Join(t.TempDir(), "state") // does not exist: the plugins make it all
	w := &dnsWorld{world: newWorld(t, ""), dir: filepath.Join(root, "run")}
	t.Cleanup(w.stopSidecar)
	w.dataDir = filepath.Join(root, "ipam")
	logFile := filepath.Join(root, "log", "moor.log")
	t.Setenv("MOOR_LOG_FILE", logFile)
	t.Setenv("MOOR_LOG_LEVEL", "debug")
	list := w.network("modenet", "mmode0", "10.238.0.0/24", nil)
	ctr, rt, _ := w.container(list, "web")

	want := map[string]os.FileMode{
		root:                                   os.ModeDir | 0o700,
		w.dataDir:                              os.ModeDir | 0o700,
		filepath.Join(w.dataDir, "modenet.db"): 0o600,
		filepath.Join(w.dataDir, "modenet.db.lock"): 0o600,
		w.dir: os.ModeDir | 0o700,
		// The records are open to the sidecar's group (read only), which it reads them as.
		filepath.Join(w.dir, "records"):                                         os.ModeDir | os.ModeSetgid | 0o750,
		filepath.Join(w.dir, "records", "modenet"):                              os.ModeDir | os.ModeSetgid | 0o750,
		filepath.Join(w.dir, "records", "modenet", "network.json"):              0o640,
		filepath.Join(w.dir, "records", "modenet", rt.ContainerID+".eth0.json"): 0o640,
		filepath.Join(w.dir, "dns.pid"):                                         0o600,
		filepath.Join(w.dir, "dns.sock"):                                        os.ModeSocket | 0o600,
		filepath.Join(root, "log"):                                              os.ModeDir | 0o700,
		logFile:                                                                 0o600,
		fwLock:                                                                  0o600,
	}
	for path, mode := range want {
		st, err := os.Stat(path)
		if err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		if st.Mode() != mode {
			t.Errorf("%s: mode %v, want %v", path, st.Mode(), mode)
		}
	}
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		sidecarGroup := false
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			sidecarGroup = st.Gid == server.DefaultGID && strings.HasPrefix(p, filepath.Join(w.dir, "records"))
		}
		switch {
		case info.Mode().Perm()&0o007 != 0:
			t.Errorf("%s: mode %v is open to others", p, info.Mode())
		case info.Mode().Perm()&0o070 != 0 && (!sidecarGroup || info.Mode().Perm()&0o020 != 0):
			t.Errorf("%s: mode %v is open to a group other than the sidecar's, or writable by it", p, info.Mode())
		}
		return nil
	})

	// ANY is refused: a resolver inside a container network is not an amplifier.
	var resp *dns.Msg
	err := ctr.Do(func(ns.NetNS) error {
		m := new(dns.Msg)
		m.SetQuestion("web.", dns.TypeANY)
		var err error
		resp, _, err = (&dns.Client{Timeout: 2 * time.Second}).Exchange(m, net.JoinHostPort("10.238.0.1", "53"))
		return err
	})
	if err != nil || resp.Rcode != dns.RcodeRefused || len(resp.Answer) != 0 {
		t.Errorf("ANY from a container: %v %v, want REFUSED without answers", resp, err)
	}
}

// shells are the programs that would run a command line built from input.
var shells = map[string]bool{"sh": true, "bash": true, "dash": true, "ash": true, "zsh": true, "ksh": true}

// No non-test Go code of the module runs a shell with -c (a command line built from
// strings), and no package linked into a plugin binary runs a shell at all: every
// external command is exec'd with an argument vector.
func TestSecurityNoShellCommands(t *testing.T) {
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	// The scan itself finds what it looks for.
	probe := filepath.Join(t.TempDir(), "probe.go")
	src := "package p\nimport \"os/exec\"\nfunc f(s string) { exec.Command(\"/bin/sh\", \"-c\", s).Run(); exec.CommandContext(nil, \"bash\", s) }\n"
	if err := os.WriteFile(probe, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	if calls := shellCalls(t, probe); len(calls) != 2 || !calls[0].dashC || calls[1].dashC {
		t.Fatalf("the scan found %+v in the probe, want sh -c and bash", calls)
	}
	pluginDirs := pluginPackageDirs(t, repo)
	var files int
	err = filepath.WalkDir(repo, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() && p != repo && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		files++
		for _, call := range shellCalls(t, p) {
			rel, _ := filepath.Rel(repo, call.pos)
			switch {
			case call.dashC:
				t.Errorf("%s: runs %s -c: a command line built from strings", rel, call.shell)
			case pluginDirs[filepath.Dir(p)]:
				t.Errorf("%s: a package of a plugin binary runs %s", rel, call.shell)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 50 {
		t.Fatalf("scanned only %d files: wrong root %s?", files, repo)
	}
}

type shellCall struct {
	pos   string
	shell string
	dashC bool
}

// shellCalls finds exec.Command/CommandContext and syscall/unix Exec calls in a file whose
// program is a shell given as a string literal.
func shellCalls(t *testing.T, path string) []shellCall {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, nil, 0)
	if err != nil {
		t.Fatalf("parsing %s: %v", path, err)
	}
	var out []shellCall
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok {
			return true
		}
		pkg, ok := sel.X.(*ast.Ident)
		if !ok {
			return true
		}
		progArg := -1
		switch pkg.Name + "." + sel.Sel.Name {
		case "exec.Command", "syscall.Exec", "unix.Exec":
			progArg = 0
		case "exec.CommandContext":
			progArg = 1
		}
		if progArg < 0 || len(call.Args) <= progArg {
			return true
		}
		prog, ok := stringLit(call.Args[progArg])
		if !ok || !shells[filepath.Base(prog)] {
			return true
		}
		c := shellCall{pos: fset.Position(call.Pos()).String(), shell: prog}
		for _, a := range call.Args[progArg+1:] {
			if s, ok := stringLit(a); ok && s == "-c" {
				c.dashC = true
			}
		}
		out = append(out, c)
		return true
	})
	return out
}

func stringLit(e ast.Expr) (string, bool) {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return s, err == nil
}

// pluginPackageDirs are the directories of the module's packages linked into the plugin
// binaries (every top-level directory with a main.go, and what it imports of the module).
func pluginPackageDirs(t *testing.T, repo string) map[string]bool {
	t.Helper()
	mains, _ := filepath.Glob(filepath.Join(repo, "*", "main.go"))
	args := []string{"list", "-deps", "-f", "{{if not .Standard}}{{.Dir}}{{end}}"}
	for _, m := range mains {
		args = append(args, "./"+filepath.Base(filepath.Dir(m)))
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = repo
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dirs := map[string]bool{}
	for _, d := range strings.Fields(string(out)) {
		if strings.HasPrefix(d, repo+string(filepath.Separator)) {
			dirs[d] = true
		}
	}
	if len(dirs) < len(mains) {
		t.Fatalf("go list found %d packages for %d plugins", len(dirs), len(mains))
	}
	return dirs
}

// foreignRules are another tool's tables and chains in a host: an nftables table with a
// base chain, and iptables chains in filter and nat with jumps from the built-in chains.
var foreignRules = [][]string{
	{"nft", "add", "table", "inet", "foreignfw"},
	{"nft", "add", "chain", "inet", "foreignfw", "fwdchain", "{ type filter hook forward priority 10 ; policy accept ; }"},
	{"nft", "add", "rule", "inet", "foreignfw", "fwdchain", "ip", "saddr", "192.0.2.1", "accept", "comment", `"foreign"`},
	{"nft", "add", "chain", "inet", "foreignfw", "spare"},
	{"iptables", "-N", "FOREIGN"},
	{"iptables", "-A", "FOREIGN", "-s", "192.0.2.1", "-j", "ACCEPT"},
	{"iptables", "-A", "FORWARD", "-j", "FOREIGN"},
	{"iptables", "-t", "nat", "-N", "FOREIGN-NAT"},
	{"iptables", "-t", "nat", "-A", "FOREIGN-NAT", "-p", "tcp", "--dport", "9999", "-j", "DNAT", "--to-destination", "192.0.2.2:80"},
	{"iptables", "-t", "nat", "-A", "PREROUTING", "-j", "FOREIGN-NAT"},
}

// foreignState is how the foreign rules look now.
func foreignState(t *testing.T, w *world) string {
	t.Helper()
	var parts []string
	err := w.host.Do(func(ns.NetNS) error {
		for _, args := range [][]string{
			{"nft", "list", "table", "inet", "foreignfw"},
			{"iptables", "-S", "FOREIGN"},
			{"iptables", "-t", "nat", "-S", "FOREIGN-NAT"},
		} {
			out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
			if err != nil {
				return fmt.Errorf("%v: %v: %s", args, err, out)
			}
			parts = append(parts, string(out))
		}
		for _, jump := range [][]string{{"FORWARD", "-A FORWARD -j FOREIGN"}, {"PREROUTING", "-A PREROUTING -j FOREIGN-NAT"}} {
			table := "filter"
			if jump[0] == "PREROUTING" {
				table = "nat"
			}
			out, err := exec.Command("iptables", "-t", table, "-S", jump[0]).CombinedOutput()
			if err != nil {
				return err
			}
			parts = append(parts, fmt.Sprintf("%s has the jump: %v", jump[0], strings.Contains(string(out), jump[1])))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(parts, "\n")
}

// moor's firewall changes only what is moor's: another tool's nftables table and
// iptables chains (and its jumps from the built-in chains) come through ADD, CHECK, DEL,
// GC and the removal of moor's last network unchanged, on both backends.
func TestSecurityForeignFirewallUntouched(t *testing.T) {
	forEachBackend(t, func(t *testing.T, w *world) {
		err := w.host.Do(func(ns.NetNS) error {
			for _, args := range foreignRules {
				if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
					return fmt.Errorf("%v: %v: %s", args, err, out)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		before := foreignState(t, w)
		list := w.network("foreignnet", "mforeign0", "10.239.0.0/24", nil)
		_, rt1, _ := w.attach(list, map[string]any{"hostPort": 18500, "containerPort": 80})
		_, _, _ = w.attach(list, map[string]any{"hostPort": 18501, "containerPort": 80})
		if err := w.rt.check(list, rt1); err != nil {
			t.Errorf("CHECK: %v", err)
		}
		if err := w.rt.del(list, rt1); err != nil {
			t.Fatal(err)
		}
		if err := w.rt.gc(list); err != nil {
			t.Fatal(err)
		}
		fw, err := firewall.New(w.backend, firewall.Options{NetNS: w.host})
		if err != nil {
			t.Fatal(err)
		}
		if err := fw.RemoveNetwork("foreignnet"); err != nil { // moor's last network: its table or chains go
			t.Fatal(err)
		}
		if after := foreignState(t, w); after != before {
			t.Errorf("foreign rules changed:\n%s\n--- became ---\n%s", before, after)
		}
		if strings.Contains(w.ruleset(), "foreignnet") {
			t.Errorf("moor's rules of the removed network are still there:\n%s", w.ruleset())
		}
	})
}
