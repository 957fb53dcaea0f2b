package plugins

import "unicode"

// The spec's rules for names, written out instead of taken from
// github.com/containernetworking/cni/pkg/utils: that package compiles a regular
// expression when the process starts, which links package regexp (about 90 KB of code,
// mapped and, 64 KB around each touched page, faulted in by every plugin process) and
// runs its initialiser on every exec, VERSION included, for a check a loop does. The
// rules and the messages are the same as libcni's (names_test.go compares them).

// specIfNameMax is the longest interface name the kernel takes (IFNAMSIZ - 1).
const specIfNameMax = 15

// SpecName reports whether s is a valid container ID or network name by the spec: a
// letter or digit, then letters, digits, '_', '.' and '-'.
func SpecName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '_' && c != '.' && c != '-') {
			return false
		}
	}
	return true
}

// ifNameError is a refused interface name, in libcni's words (which end in "..", hence a
// type rather than errors.New).
type ifNameError string

func (e ifNameError) Error() string { return string(e) }

// SpecIfName checks an interface name by the spec: 1 to 15 bytes, not "." or "..", no
// '/', ':' or white space. ValidIfName adds moor's own, stricter rule on top.
func SpecIfName(name string) error {
	switch {
	case name == "":
		return ifNameError("interface name is empty")
	case len(name) > specIfNameMax:
		return ifNameError("interface name is too long")
	case name == "." || name == "..":
		return ifNameError("interface name is . or ..")
	}
	for _, r := range name {
		if r == '/' || r == ':' || unicode.IsSpace(r) {
			return ifNameError("interface name contains / or : or whitespace characters")
		}
	}
	return nil
}
