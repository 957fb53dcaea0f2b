package pluginexec

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

func script(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFind(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	if err := os.Mkdir(filepath.Join(a, "p"), 0o755); err != nil { // a directory is no plugin
		t.Fatal(err)
	}
	want := script(t, b, "p", "exit 0\n")
	for _, tc := range []struct {
		name, path, want string
	}{
		{"p", a + ":" + b, want},
		{"p", "::" + b, want},
		{"p", a, ""},
		{"q", a + ":" + b, ""},
		{"../p", b, ""},
	} {
		got, err := Find(tc.name, tc.path)
		if got != tc.want || (tc.want == "") != errors.Is(err, ErrNotFound) {
			t.Errorf("Find(%q, %q) = %q, %v; want %q", tc.name, tc.path, got, err, tc.want)
		}
	}
}

// The delegate sees the command's CNI_* variables, not the caller's, and the config on
// stdin; its result and its CNI error come back.
func TestRun(t *testing.T) {
	t.Setenv("CNI_COMMAND", "ADD")
	t.Setenv("CNI_IFNAME", "outer")
	t.Setenv("MOOR_KEEP", "kept")
	dir := t.TempDir()
	echo := script(t, dir, "echo", `read conf
printf '{"cniVersion":"1.0.0","dns":{"domain":"%s-%s-%s-%s"},"ips":[]}' "$CNI_COMMAND" "$CNI_IFNAME" "$MOOR_KEEP" "$conf"
`)
	env := Args{Command: "CHECK", ContainerID: "c1", Netns: "/n", IfName: "eth1", Path: dir}.Env()
	out, err := Run(context.Background(), echo, []byte("cfg\n"), env)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Result(out)
	if err != nil {
		t.Fatal(err)
	}
	r, err := current.NewResultFromResult(res)
	if err != nil || r.DNS.Domain != "CHECK-eth1-kept-cfg" {
		t.Errorf("result %+v, %v", r, err)
	}
	if n := strings.Count(strings.Join(env, "\n"), "CNI_COMMAND="); n != 1 {
		t.Errorf("%d CNI_COMMAND variables in %v", n, env)
	}

	fail := script(t, dir, "fail", `echo '{"cniVersion":"1.0.0","code":7,"msg":"bad field"}'; exit 1
`)
	_, err = Run(context.Background(), fail, nil, env)
	var cniErr *types.Error
	if !errors.As(err, &cniErr) || cniErr.Code != 7 || cniErr.Msg != "bad field" {
		t.Errorf("error %v, want the delegate's code 7", err)
	}
	crash := script(t, dir, "crash", "echo broken >&2; exit 3\n")
	if _, err := Run(context.Background(), crash, nil, env); err == nil || errors.As(err, &cniErr) || !strings.Contains(err.Error(), "broken") {
		t.Errorf("crash without a CNI error: %v, want its stderr", err)
	}
}
