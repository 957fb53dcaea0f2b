package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/moornet/moor/cmd/moor/internal/cli"
)

// runCLI runs the CLI in process with only a config directory (no kernel work).
func runCLI(t *testing.T, confDir string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := cli.Main(append([]string{"--conf-dir", confDir}, args...), strings.NewReader(""), &out, &errb)
	return out.String(), errb.String(), code
}

func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args     []string
		code     int
		mentions string
	}{
		{[]string{"network", "bogus"}, cli.ExitUsage, `unknown command "bogus"`},
		{[]string{"bogus"}, cli.ExitUsage, `unknown command "bogus"`},
		{[]string{"network", "ls", "--bogus"}, cli.ExitUsage, "unknown flag: --bogus"},
		{[]string{"network", "create"}, cli.ExitUsage, "accepts 1 arg(s)"},
		{[]string{"network", "inspect"}, cli.ExitUsage, "requires at least 1 arg(s)"},
		{[]string{"network", "create", "-o", "nope=1", "x"}, cli.ExitUsage, `unknown option for the bridge driver`},
		{[]string{"network", "create", "-o", "mtu", "x"}, cli.ExitUsage, "want KEY=VALUE"},
		{[]string{"network", "create", "--dns", "--disable-dns", "x"}, cli.ExitUsage, "exclude each other"},
		{[]string{"network", "create", "-d", "overlay", "x"}, cli.ExitError, `driver "overlay" is not yet available`},
		{[]string{"network", "inspect", "nosuch"}, cli.ExitError, `network "nosuch" not found`},
		{[]string{"network", "connect", "nosuch", "ns1"}, cli.ExitError, `network "nosuch" not found`},
		{[]string{"doctor", "--format", "xml"}, cli.ExitUsage, "--format"},
	} {
		out, errs, code := runCLI(t, dir, c.args...)
		if code != c.code || !strings.Contains(errs, c.mentions) {
			t.Errorf("moor %s: exit %d, stderr %q (stdout %q); want exit %d mentioning %q",
				strings.Join(c.args, " "), code, errs, out, c.code, c.mentions)
		}
		if code == cli.ExitUsage && !strings.Contains(errs, "--help' for usage") {
			t.Errorf("moor %s: a usage error must point at --help: %q", strings.Join(c.args, " "), errs)
		}
	}
	if out, _, code := runCLI(t, dir, "network", "ls"); code != 0 || out != "NETWORK ID   NAME   DRIVER   SUBNET   GATEWAY   CONTAINERS\n" {
		t.Errorf("ls of an empty directory: exit %d %q", code, out)
	}
}

func TestEnvironmentConfDir(t *testing.T) {
	dir := t.TempDir()
	conf := `{"cniVersion":"1.1.0","name":"envnet","plugins":[{"type":"moor-none"}]}`
	if err := os.WriteFile(filepath.Join(dir, "10-envnet.conflist"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(cli.EnvConfDir, dir)
	var out, errb bytes.Buffer
	if code := cli.Main([]string{"network", "ls", "--format", "{{.Name}} {{.Driver}}"}, strings.NewReader(""), &out, &errb); code != 0 || out.String() != "envnet none\n" {
		t.Errorf("MOOR_CONF_DIR: exit %d out %q err %q", code, out.String(), errb.String())
	}
	out.Reset()
	if code := cli.Main([]string{"--conf-dir", t.TempDir(), "network", "ls", "-q"}, strings.NewReader(""), &out, &errb); code != 0 || out.String() != "" {
		t.Errorf("--conf-dir must win over the environment: %q", out.String())
	}
}

// Every command has examples in its help.
func TestHelpHasExamples(t *testing.T) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "completion" || c.Name() == "help" {
			return
		}
		if !c.HasExample() {
			t.Errorf("%s has no example", c.CommandPath())
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(cli.New())
}

// docs/cli.md is what `moor gendocs` writes from the commands.
func TestDocsUpToDate(t *testing.T) {
	var b bytes.Buffer
	if err := cli.WriteDocs(&b, cli.New()); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("..", "..", cli.DocsPath)
	if *update {
		if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	have, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(have, b.Bytes()) {
		t.Errorf("%s is stale (%v): run `go generate ./cmd/moor` (or go test ./cmd/moor -update)", path, err)
	}
	for _, want := range []string{"## moor network create", "## moor doctor", "Exit codes", "## moor completion bash"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("the docs lack %q", want)
		}
	}
}

// The built binary exits with the documented codes and writes errors to stderr. It needs
// no root: without TestMain's binaries (not root) it builds the CLI alone.
func TestBinaryExitCodes(t *testing.T) {
	bin := filepath.Join(binDir, "moor")
	if binDir == "" {
		bin = filepath.Join(t.TempDir(), "moor")
		if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
			t.Fatalf("building moor: %v\n%s", err, out)
		}
	}
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"--conf-dir", t.TempDir(), "network", "ls", "-q"}, 0},
		{[]string{"--conf-dir", t.TempDir(), "network", "inspect", "nosuch"}, 1},
		{[]string{"network", "frobnicate"}, 2},
	} {
		cmd := exec.Command(bin, c.args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != c.code || (code != 0) != strings.HasPrefix(stderr.String(), "moor: ") || stdout.Len() != 0 {
			t.Errorf("moor %v: exit %d, stdout %q, stderr %q; want exit %d", c.args, code, stdout.String(), stderr.String(), c.code)
		}
	}
	out, err := exec.Command(bin, "completion", "bash").Output()
	if err != nil || !strings.Contains(string(out), "__start_moor") {
		t.Errorf("bash completion: %v", err)
	}
}
