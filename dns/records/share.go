package records

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// GrantRead gives group gid read access to the Local store at root, for a reader that runs
// under that group without privileges (the DNS server): it sets the group of root and of
// every directory and file below it to gid, directories to 2750 (the setgid bit makes files
// and directories created later inherit the group) and files to 0640. The owner stays as
// it is, and others get nothing. Symbolic links are neither followed nor changed. The
// caller must be allowed to change the group (root).
func GrantRead(root string, gid int) error {
	if root == "" {
		root = DefaultRoot
	}
	if err := os.MkdirAll(root, dirMode); err != nil {
		return &IOError{Op: "create", Path: root, Err: err}
	}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed meanwhile (a temp file renamed, a network deleted)
			}
			return err
		}
		var mode fs.FileMode
		switch {
		case d.IsDir():
			mode = netDirMode
		case d.Type().IsRegular():
			mode = fileMode
		default:
			return nil // symlinks and anything else are left alone
		}
		if err := os.Lchown(p, -1, gid); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err := os.Chmod(p, mode); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	})
	if err != nil {
		return &IOError{Op: "grant read", Path: root, Err: err}
	}
	return nil
}
