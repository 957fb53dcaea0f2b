package server

import (
	"path/filepath"

	"github.com/moornet/moor/plugins/netnsid"
)

// DefaultRunDir is where the sidecar's state lives unless MOOR_RUN_DIR (RunDirEnv) moves it.
const DefaultRunDir = "/run/moor"

// RunDirEnv, when set, moves the sidecar's default paths (record store, control socket,
// pid file) under that directory: one machine can then host several independent "hosts"
// (labs, demos, tests). moor-dns, the moor CLI and moor-netavark read it alike.
const RunDirEnv = "MOOR_RUN_DIR"

// Paths are where one network namespace's sidecar keeps its state.
type Paths struct {
	StoreDir      string // the Local record store
	ControlSocket string
	PidFile       string
}

// PathsFor returns the sidecar paths of the network namespace id under runDir
// (DefaultRunDir when empty). The machine's own namespace keeps the historical layout
// (<run>/dns/, <run>/dns.sock, <run>/dns.pid); any other namespace gets its own directory,
// <run>/netns/<dev>-<ino>/ holding dns/, dns.sock and dns.pid, so that the sidecars,
// records and networks of different namespaces never meet, whatever their networks are
// called.
func PathsFor(runDir string, id netnsid.ID, machine bool) Paths {
	if runDir == "" {
		runDir = DefaultRunDir
	}
	dir := netnsid.StateDir(runDir, id, machine)
	return Paths{
		StoreDir:      filepath.Join(dir, "dns"),
		ControlSocket: filepath.Join(dir, "dns.sock"),
		PidFile:       filepath.Join(dir, "dns.pid"),
	}
}

// PathsOf returns the sidecar paths, under runDir, of the calling thread's network
// namespace, with that namespace's identity. (A caller that serves another namespace, the
// CLI's --netns, calls it inside that namespace, through plugins.WithNetns.)
func PathsOf(runDir string) (Paths, netnsid.ID, error) {
	id, err := netnsid.Self()
	if err != nil {
		return Paths{}, id, err
	}
	return PathsFor(runDir, id, netnsid.IsMachine()), id, nil
}
