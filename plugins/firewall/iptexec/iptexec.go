// Package iptexec runs the iptables commands of moor's iptables firewall backend:
// iptables or ip6tables with arguments (changes and "-S" listings) and
// iptables-restore/ip6tables-restore --noflush with a rule file on stdin. Every run
// waits for the xtables lock (--wait with a timeout in whole seconds), and a non-zero
// exit becomes an *Error that keeps the exit status and the command's message, so a
// caller can tell "does not exist" (a rule or chain already gone) and "already exists"
// (a chain created twice) from other failures.
//
// Decisions: the commands run in the calling thread's network namespace (the caller
// enters a namespace first, as with any exec). It assumes an iptables of at least
// 1.4.22 (2014), which has --wait with seconds: every distribution moor supports ships
// a newer one, so it neither probes the version (one exec less per handle) nor falls
// back to taking the xtables lock file itself. Messages are matched as plain
// substrings, in both the legacy and the nf_tables variants of iptables.
//
// What it is not: a rule builder or parser. It does not know tables, chains or rule
// syntax beyond what it passes through; the backend builds arguments and reads
// listings. Its reason to exist is size: the general-purpose go-iptables library
// parses version strings with regexp, which every moor-bridge exec would map.
package iptexec

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Family picks iptables (IPv4) or ip6tables (IPv6).
type Family int

const (
	IPv4 Family = 4
	IPv6 Family = 6
)

// Runner runs one family's commands.
type Runner struct {
	bin  string // "iptables" or "ip6tables"
	path string
	wait string // --wait's argument, seconds; "" waits as long as it takes
}

// New finds the family's iptables binary in PATH. wait bounds each command's wait for
// the xtables lock, rounded up to whole seconds; zero or less waits without a bound.
func New(f Family, wait time.Duration) (*Runner, error) {
	bin := "iptables"
	if f == IPv6 {
		bin = "ip6tables"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, err
	}
	r := &Runner{bin: bin, path: path}
	if wait > 0 {
		r.wait = strconv.Itoa(int(math.Ceil(wait.Seconds())))
	}
	return r, nil
}

// Binary is the name of the command Run runs ("iptables" or "ip6tables").
func (r *Runner) Binary() string { return r.bin }

// withWait returns a copy of args with the lock wait added.
func (r *Runner) withWait(args []string) []string {
	out := make([]string, 0, len(args)+2)
	out = append(out, args...)
	if r.wait == "" {
		return append(out, "--wait")
	}
	return append(out, "--wait", r.wait)
}

// Run runs the binary with args and the lock wait; its output is discarded.
func (r *Runner) Run(args ...string) error {
	_, err := r.run(r.path, r.withWait(args), nil)
	return err
}

// Output runs the binary with args and the lock wait and returns its standard output.
func (r *Runner) Output(args ...string) ([]byte, error) {
	return r.run(r.path, r.withWait(args), nil)
}

// Restore feeds rules to <binary>-restore --noflush: tables not named in rules are left
// alone, and each table's lines commit together or not at all.
func (r *Runner) Restore(rules string) error {
	path, err := exec.LookPath(r.bin + "-restore")
	if err != nil {
		return err
	}
	_, err = r.run(path, r.withWait([]string{"--noflush"}), strings.NewReader(rules))
	return err
}

func (r *Runner) run(path string, args []string, stdin *strings.Reader) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != nil {
		cmd.Stdin = stdin
	}
	err := cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return nil, &Error{Args: cmd.Args, Status: exit.ExitCode(), Msg: strings.TrimSpace(stderr.String())}
	}
	if err != nil {
		return nil, err
	}
	return stdout.Bytes(), nil
}

// Error is a command that ran and exited with a non-zero status.
type Error struct {
	Args   []string // the command line, binary first
	Status int      // exit status; -1 if a signal ended it
	Msg    string   // what the command wrote to stderr
}

func (e *Error) Error() string {
	return fmt.Sprintf("running %s: exit status %d: %s", strings.Join(e.Args, " "), e.Status, e.Msg)
}

// What iptables (legacy and nf_tables) writes when the rule, chain or table asked for is
// not there, and when a chain to create is.
var (
	notExistMsgs = []string{
		"Bad rule (does a matching rule exist in that chain?)",
		"No chain/target/match by that name",
		"does not exist",
		"No such file or directory",
	}
	existMsgs = []string{"already exists", "File exists"}
)

// IsNotExist tells whether the command failed because its rule or chain does not exist.
// The status is not looked at: iptables-nft exits with 2 (a usage error) for a rule
// that jumps to a missing chain, and such a rule cannot exist either.
func (e *Error) IsNotExist() bool { return containsAny(e.Msg, notExistMsgs) }

// IsExist tells whether the command failed because the chain it creates exists.
func (e *Error) IsExist() bool { return e.Status == 1 && containsAny(e.Msg, existMsgs) }

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// IsNotExist reports whether err is an *Error for a missing rule or chain.
func IsNotExist(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.IsNotExist()
}

// IsExist reports whether err is an *Error for a chain that exists already.
func IsExist(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.IsExist()
}
