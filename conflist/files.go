package conflist

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// NotFoundError: no network has that name or ID.
type NotFoundError struct{ Ref string }

func (e *NotFoundError) Error() string { return fmt.Sprintf("network %q not found", e.Ref) }

// AmbiguousError: an ID prefix matches several networks.
type AmbiguousError struct {
	Ref     string
	Matches []string
}

func (e *AmbiguousError) Error() string {
	return fmt.Sprintf("network ID prefix %q matches several networks: %s", e.Ref, strings.Join(e.Matches, ", "))
}

// Resolve finds a network by name, full ID or unique ID prefix, in that order.
func Resolve(nets []*Network, ref string) (*Network, error) {
	for _, n := range nets {
		if n.Name == ref {
			return n, nil
		}
	}
	var matches []*Network
	for _, n := range nets {
		if ref != "" && strings.HasPrefix(n.ID, ref) {
			matches = append(matches, n)
		}
	}
	switch len(matches) {
	case 0:
		return nil, &NotFoundError{Ref: ref}
	case 1:
		return matches[0], nil
	default:
		names := make([]string, len(matches))
		for i, m := range matches {
			names[i] = m.Name
		}
		return nil, &AmbiguousError{Ref: ref, Matches: names}
	}
}

// ExistsError: the target file of a new network exists.
type ExistsError struct{ File string }

func (e *ExistsError) Error() string { return fmt.Sprintf("%s already exists", e.File) }

// WriteNew writes data to <dir>/<file> atomically: a temp file in dir, fsynced and
// renamed onto the target with mode 0644. An existing target is an *ExistsError (the
// check and the rename are not one step: two concurrent creates of one name race, and the
// later rename wins). dir is created (0755) when missing.
func WriteNew(dir, file string, data []byte) (path string, err error) {
	const dirMode = 0o755
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return "", fmt.Errorf("creating %s: %w", dir, err)
	}
	path = filepath.Join(dir, file)
	if _, err := os.Lstat(path); err == nil {
		return "", &ExistsError{File: path}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, "."+file+".tmp-")
	if err != nil {
		return "", fmt.Errorf("writing %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(data); err == nil {
		err = tmp.Chmod(FileMode)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("writing %s: %w", tmp.Name(), err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("renaming %s to %s: %w", tmp.Name(), path, err)
	}
	syncDir(dir)
	return path, nil
}

// syncDir makes a rename in dir durable; failing to is not fatal (the file is written).
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}
