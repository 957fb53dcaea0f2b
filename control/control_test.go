package control

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		network string
		address string
		bad     string // part of the error; "" when valid
	}{
		{in: "/run/moor/dns.sock", network: "unix", address: "/run/moor/dns.sock"},
		{in: "unix:/run/moor/agent.sock", network: "unix", address: "/run/moor/agent.sock"},
		{in: "relative.sock", network: "unix", address: "relative.sock"},
		{in: "127.0.0.1:9153", network: "tcp", address: "127.0.0.1:9153"},
		{in: "[::1]:9153", network: "tcp", address: "[::1]:9153"},
		{in: "192.0.2.1:80", bad: "not a loopback address"},
		{in: "[2001:db8::1]:80", bad: "not a loopback address"},
		{in: "unix:", bad: "empty socket path"},
		{in: "", bad: "empty"},
	}
	for _, tt := range tests {
		ep, err := Parse(tt.in)
		if tt.bad != "" {
			if err == nil || !strings.Contains(err.Error(), tt.bad) || !strings.Contains(err.Error(), fmt.Sprintf("%q", tt.in)) && tt.in != "" {
				t.Errorf("Parse(%q) = %+v, %v; want an error naming the value and %q", tt.in, ep, err, tt.bad)
			}
			continue
		}
		if err != nil || ep.Network != tt.network || ep.Address != tt.address {
			t.Errorf("Parse(%q) = %+v, %v; want %s %s", tt.in, ep, err, tt.network, tt.address)
		}
	}
}

// echo answers GET /ok with "fine", POST /fail with a 500 and a message.
func echo() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ok", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "fine "+r.URL.RawQuery) })
	mux.HandleFunc("POST /fail", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "it broke", http.StatusInternalServerError)
	})
	return mux
}

// A unix endpoint: directory and socket made with root-only modes, both verbs, a non-200
// answer as *StatusError with the body, the socket removed on Stop.
func TestUnixServerAndClient(t *testing.T) {
	for _, prefix := range []string{"", "unix:"} {
		dir := filepath.Join(t.TempDir(), "run", "moor")
		sock := filepath.Join(dir, "x.sock")
		srv, err := Listen(prefix+sock, echo())
		if err != nil {
			t.Fatal(err)
		}
		for path, want := range map[string]os.FileMode{dir: os.ModeDir | DirMode, sock: os.ModeSocket | SocketMode} {
			if fi, err := os.Stat(path); err != nil || fi.Mode() != want {
				t.Errorf("%s: %v %v, want mode %v", path, fi.Mode(), err, want)
			}
		}
		c, err := NewClient(prefix+sock, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if body, err := c.Get("/ok?a=b"); err != nil || string(body) != "fine a=b" {
			t.Errorf("GET /ok: %q, %v", body, err)
		}
		_, err = c.Post("/fail")
		var se *StatusError
		if !errors.As(err, &se) || se.Code != http.StatusInternalServerError || se.Body != "it broke" {
			t.Errorf("POST /fail: %v, want a 500 StatusError with the body", err)
		}
		if _, err := c.Post("/ok"); !errors.As(err, &se) || se.Code != http.StatusMethodNotAllowed {
			t.Errorf("POST /ok: %v, want 405", err)
		}
		srv.Stop(time.Second)
		if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket left after Stop: %v", err)
		}
		if _, err := c.Get("/ok"); err == nil {
			t.Error("a stopped server still answers")
		}
	}
}

// A socket nobody accepts on (a daemon that died) is replaced; one a server accepts on is
// not, and the running server keeps answering.
func TestStaleAndLiveSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "x.sock")
	dead, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	// Close without unlinking, as a killed process leaves it.
	dead.(*net.UnixListener).SetUnlinkOnClose(false)
	_ = dead.Close()
	if _, err := os.Lstat(sock); err != nil {
		t.Fatalf("stale socket not there: %v", err)
	}
	srv, err := Listen(sock, echo())
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	defer srv.Stop(0)
	if _, err := Listen(sock, echo()); !errors.Is(err, ErrInUse) {
		t.Fatalf("second Listen on a live socket: %v, want ErrInUse", err)
	}
	c, _ := NewClient(sock, 5*time.Second)
	if body, err := c.Get("/ok"); err != nil || string(body) != "fine " {
		t.Fatalf("the first server after the refused second: %q, %v", body, err)
	}
}

// A loopback TCP endpoint serves the same API; a non-loopback one is refused before
// anything listens.
func TestLoopbackTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	srv, err := Listen(addr, echo())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop(0)
	if srv.Addr() != addr {
		t.Errorf("Addr() = %s, want %s", srv.Addr(), addr)
	}
	c, _ := NewClient(addr, 5*time.Second)
	if body, err := c.Get("/ok"); err != nil || string(body) != "fine " {
		t.Errorf("GET over TCP: %q, %v", body, err)
	}
	if _, err := Listen("0.0.0.0:0", echo()); err == nil || !strings.Contains(err.Error(), "not a loopback address") {
		t.Errorf("Listen on 0.0.0.0: %v, want a refusal", err)
	}
	if _, err := NewClient("192.0.2.1:80", time.Second); err == nil {
		t.Error("NewClient accepted a non-loopback address")
	}
}

// Stop with a grace lets a request in flight finish.
func TestStopGrace(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "x.sock")
	started := make(chan struct{})
	release := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("POST /slow", func(w http.ResponseWriter, _ *http.Request) {
		close(started)
		<-release
		_, _ = io.WriteString(w, "done")
	})
	srv, err := Listen(sock, mux)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := NewClient(sock, 20*time.Second)
	got := make(chan string, 1)
	go func() {
		body, err := c.Post("/slow")
		got <- fmt.Sprintf("%s %v", body, err)
	}()
	<-started
	stopped := make(chan struct{})
	go func() { srv.Stop(20 * time.Second); close(stopped) }()
	close(release)
	if g := <-got; g != "done <nil>" {
		t.Errorf("request in flight during Stop: %s", g)
	}
	<-stopped
}
