package installer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// rootFS performs Install's file operations below a root prefix: "" for the
// real system, a temporary directory in tests. Paths given to its methods
// are the paths on the installed system.
type rootFS string

// perm is the owner and mode a path must end up with. A uid or gid of -1
// leaves it unchanged (Windows, where the ACL decides instead).
type perm struct {
	mode     fs.FileMode
	uid, gid int
}

func (r rootFS) path(p string) string {
	if r == "" {
		return p
	}
	return filepath.Join(string(r), p)
}

// mkdir creates dir, with any missing parents as 0755 directories of the
// current user, and gives dir exactly the permission p, tightening or
// re-owning a directory that already exists.
func (r rootFS) mkdir(dir string, p perm) error {
	full := r.path(dir)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(full, p.mode); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return setPerm(full, p, true)
}

// createIfMissing writes data to file with permission p unless file
// exists, in which case only its permission is set: a configuration an
// operator wrote is never overwritten. It reports whether the file
// existed; with no data it creates nothing.
func (r rootFS) createIfMissing(file string, data []byte, p perm) (existed bool, err error) {
	full := r.path(file)
	if _, err := os.Lstat(full); err == nil {
		return true, setPerm(full, p, false)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	if data == nil {
		return false, nil
	}
	// Write a temporary file, then hard-link it into place: readers never
	// see half a file, and unlike a rename a link fails rather than
	// replacing a file that appeared meanwhile.
	tmp, err := writeTemp(filepath.Dir(full), data, p)
	if err == nil {
		defer os.Remove(tmp)
		err = os.Link(tmp, full)
	}
	if err != nil {
		return false, fmt.Errorf("write %s: %w", full, err)
	}
	return false, nil
}

// removeAll deletes dir and everything in it, refusing shared directories.
func (r rootFS) removeAll(dir string) error {
	if sharedDir(dir) {
		return fmt.Errorf("refusing to delete shared directory %s", dir)
	}
	return os.RemoveAll(r.path(dir))
}

// setPerm gives path exactly the permission p. It refuses symbolic links,
// whose targets could be anywhere.
// layConfig writes the default configuration unless one exists, and says
// what the operator must do next. It reports whether one existed.
func (r rootFS) layConfig(o Options, p perm) (configured bool, err error) {
	configured, err = r.createIfMissing(o.ConfigPath, o.DefaultConfig, p)
	if err != nil {
		return false, fmt.Errorf("configuration: %w", err)
	}
	switch {
	case configured:
	case o.DefaultConfig != nil:
		o.Logf("wrote a default configuration to %s: edit it, then start the service", o.ConfigPath)
	default:
		o.Logf("no configuration at %s: write one, then start the service", o.ConfigPath)
	}
	return configured, nil
}

// writeTemp writes data to a new temporary file in dir, synced and with
// permission p, ready to be linked or renamed into place. The caller
// removes it.
func writeTemp(dir string, data []byte, p perm) (string, error) {
	tmp, err := os.CreateTemp(dir, ".install-*")
	if err != nil {
		return "", err
	}
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = setPerm(tmp.Name(), p, false)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return "", err
	}
	return tmp.Name(), nil
}

func setPerm(path string, p perm, dir bool) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return fmt.Errorf("%s is a symbolic link: refusing to change permissions through it", path)
	case fi.IsDir() != dir && dir:
		return fmt.Errorf("%s exists and is not a directory", path)
	case fi.IsDir() != dir:
		return fmt.Errorf("%s exists and is not a regular file", path)
	}
	if p.uid != -1 || p.gid != -1 {
		if err := os.Lchown(path, p.uid, p.gid); err != nil {
			return err
		}
	}
	return os.Chmod(path, p.mode)
}
