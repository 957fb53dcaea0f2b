package records

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// A network directory of the Local store may hold a names counter, countFileName: the
// number of record files in the directory and the names those records hold. It lets ADD
// check the per-network name bound with one directory listing and one small file instead
// of reading every record. Put and Delete update it under the network's writer lock, after
// the record file is written or removed, as they find it (they do not list the directory);
// NamesHeld, its reader, trusts it only when the record-file count it stored equals the
// directory's. A crash between the two writes, or a record added or removed by a moor that
// does not know the counter, leaves the counts apart (writers move both by one), so the
// next reader recounts (reading every record, once) and rewrites it. A replacement keeps
// the count of files, so Put removes the counter before it replaces a record: a crash then
// leaves no counter, not a stale one. What goes unnoticed is only what such an older moor
// does without changing the count of files (a replacement, as many records added as
// removed), each record moving the count of names by at most MaxNamesPerRecord: the bound
// guards against runaway stores and is not exact anyway (concurrent ADDs can pass it). The
// name starts with a dot: readers of the store skip such files, older ones included;
// DeleteNetwork removes it with the rest.

// countFileName is the names counter beside a network's records.
const countFileName = ".names"

// countFile is the JSON form of the names counter.
type countFile struct {
	Version int `json:"version"`
	Records int `json:"records"` // record files in the directory when written
	Names   int `json:"names"`   // names of the readable records among them
}

// isRecordFileName reports whether a directory entry is a record file (listNetwork reads
// exactly these).
func isRecordFileName(name string) bool {
	return name != networkFileName && !strings.HasPrefix(name, ".") && strings.HasSuffix(name, recordSuffix)
}

// countRecordFiles counts the record files in dir without opening them.
func countRecordFiles(dir string) (int, error) {
	d, err := os.Open(dir)
	if err != nil {
		return 0, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return 0, &IOError{Op: "read", Path: dir, Err: err}
	}
	n := 0
	for _, name := range names {
		if isRecordFileName(name) {
			n++
		}
	}
	return n, nil
}

// readCountFile returns the counter of dir as stored.
func readCountFile(dir string) (countFile, bool) {
	var c countFile
	data, err := os.ReadFile(filepath.Join(dir, countFileName))
	if err != nil || json.Unmarshal(data, &c) != nil || c.Version != fileVersion || c.Records < 0 || c.Names < 0 {
		return countFile{}, false
	}
	return c, true
}

// readCount returns the counter of dir when it matches the directory's record files.
func readCount(dir string) (countFile, bool) {
	c, ok := readCountFile(dir)
	if !ok {
		return countFile{}, false
	}
	n, err := countRecordFiles(dir)
	if err != nil || n != c.Records {
		return countFile{}, false
	}
	return c, true
}

// recount reads every record of network and returns the counter it should have. Callers
// hold the network's writer lock.
func (l *Local) recount(network string) (countFile, error) {
	dir := l.netDir(network)
	n, err := countRecordFiles(dir)
	if err != nil {
		return countFile{}, err
	}
	recs, err := l.listNetwork(network)
	if err != nil && len(recs) == 0 && n > 0 {
		var ce *CorruptError
		if !errors.As(err, &ce) {
			return countFile{}, err
		}
	}
	c := countFile{Version: fileVersion, Records: n}
	for _, r := range recs {
		c.Names += len(r.Names)
	}
	return c, nil
}

// currentCount returns the network's counter to update, recounting when there is none.
// A stale one is updated as it is: its record-file count stays off, so the next reader
// recounts (NamesHeld), and writers need not list the directory. Callers hold the
// network's writer lock.
func (l *Local) currentCount(network string) (countFile, error) {
	if c, ok := readCountFile(l.netDir(network)); ok {
		return c, nil
	}
	return l.recount(network)
}

// writeCount stores c; on failure it removes the counter, so that a reader recounts.
// It does not sync: a counter lost with the page cache is missing or stale in its
// record-file count, and is then recounted.
func writeCount(dir string, c countFile) {
	if err := writeFile(dir, countFileName, c, false); err != nil {
		_ = os.Remove(filepath.Join(dir, countFileName))
	}
}

// NamesHeld returns how many names the records of network hold, counting those of every
// readable record (a corrupt record holds none). It reads the network's names counter and
// lists the directory; only a missing or stale counter makes it read every record (under
// the network's writer lock, and then rewrite the counter). A network without a directory
// holds none.
func (l *Local) NamesHeld(ctx context.Context, network string) (int, error) {
	if err := ValidNetworkName(network); err != nil {
		return 0, err
	}
	dir := l.netDir(network)
	if c, ok := readCount(dir); ok {
		return c.Names, nil
	}
	unlock, err := l.lock(ctx, network)
	if errors.Is(err, errGone) || errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer unlock()
	if c, ok := readCount(dir); ok { // another writer recounted meanwhile
		return c.Names, nil
	}
	c, err := l.recount(network)
	if err != nil {
		return 0, err
	}
	writeCount(dir, c)
	return c.Names, nil
}

// ErrNoRecord is returned by Get when the attachment has no record.
var ErrNoRecord = errors.New("no such record")

// Get returns the record of one attachment, or an error wrapping ErrNoRecord when there is
// none. It reads that record's file only.
func (l *Local) Get(_ context.Context, network, containerID, ifName string) (Record, error) {
	if err := ValidKey(network, containerID, ifName); err != nil {
		return Record{}, err
	}
	p := filepath.Join(l.netDir(network), recordFileName(containerID, ifName))
	r, err := readRecord(p)
	if errors.Is(err, fs.ErrNotExist) {
		return Record{}, fmt.Errorf("%w: %s", ErrNoRecord, RecordKey{Network: network, ContainerID: containerID, IfName: ifName})
	}
	if err != nil {
		return Record{}, err
	}
	if want := (RecordKey{Network: network, ContainerID: containerID, IfName: ifName}); r.Key() != want {
		return Record{}, fmt.Errorf("%w: %s", ErrNoRecord, RecordKey{Network: network, ContainerID: containerID, IfName: ifName})
	}
	return r, nil
}
