package queue

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	bolt "go.etcd.io/bbolt"
)

// compactTxSize bounds each transaction of a compaction, so a large file is
// copied without holding all of it in memory.
const compactTxSize = 64 << 20

// FreeRatio reports the share of the queue file at path taken by free
// pages, which Compact would give back. bbolt never shrinks its file, so
// after a large backlog drains the file keeps its peak size; a start-up can
// call Compact when this exceeds, say, 0.5. The file must not be open.
func FreeRatio(path string) (float64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, fmt.Errorf("%w: free ratio: %w", ErrStorage, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, PreLoadFreelist: true, Timeout: lockTimeout})
	if err != nil {
		return 0, fmt.Errorf("%w: free ratio: %w", ErrStorage, err)
	}
	defer db.Close()
	free := db.Stats().FreePageN * db.Info().PageSize
	return float64(free) / float64(fi.Size()), nil
}

// Compact rewrites the queue file at path without its free pages and
// atomically replaces it, so a crash leaves either the old file or the new
// one. It is meant for start-up, before Open: the file must not be in use by
// any process while it runs.
func Compact(path string) error {
	if err := compact(path); err != nil {
		return fmt.Errorf("%w: compact %s: %w", ErrStorage, path, err)
	}
	return nil
}

func compact(path string) error {
	src, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: lockTimeout})
	if err != nil {
		return err
	}
	tmp := path + ".compact"
	// Left over by a compaction that was interrupted before its rename.
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		src.Close()
		return err
	}
	// Syncing once at the end is enough: until the rename, a crash only
	// loses the copy.
	dst, err := bolt.Open(tmp, 0o600, &bolt.Options{NoSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		src.Close()
		return err
	}
	err = bolt.Compact(dst, src, compactTxSize)
	// Windows cannot rename over an open file, so close src first.
	err = errors.Join(err, src.Close())
	if err == nil {
		err = dst.Sync()
	}
	err = errors.Join(err, dst.Close())
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(path))
}

// syncDir makes a rename in dir durable. Windows cannot sync a directory
// and does not need to.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}
