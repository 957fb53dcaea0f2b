//go:build linux && !amd64 && !arm64

package server

// seccompArch: no filter is built for this architecture (see seccomp_linux.go).
func seccompArch() (uint32, archFilter, bool) { return 0, archFilter{}, false }
