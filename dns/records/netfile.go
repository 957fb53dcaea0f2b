package records

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
)

// putNetworkFile writes dir's network.json unless it already holds exactly f. Every ADD
// puts its network, which almost always has not changed: rewriting it cost a file and a
// directory fsync per ADD (a few ms, as much as the record's own write). An unchanged file
// was fsynced before its rename by whoever wrote it; only that rename may not be durable
// yet (its writer died between the rename and the directory's fsync), so the directory is
// still synced, which costs little when nothing in it is dirty. A reader sees the same
// bytes either way.
func putNetworkFile(dir string, f networkFile) error {
	want, err := json.Marshal(f)
	if err != nil {
		return &IOError{Op: "encode", Path: filepath.Join(dir, networkFileName), Err: err}
	}
	if have, err := os.ReadFile(filepath.Join(dir, networkFileName)); err == nil && len(have) == len(want)+1 &&
		bytes.Equal(have[:len(want)], want) && have[len(want)] == '\n' {
		syncDir(dir)
		return nil
	}
	return writeJSON(dir, networkFileName, f)
}
