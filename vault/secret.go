package vault

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
)

// Secret returns the secret named by uri (for example the queue's data key),
// creating it with size random bytes on first use. The secret lives in the
// backend, never beside the data it protects.
func Secret(ctx context.Context, uri string, size int) ([]byte, error) {
	b, name, u, err := openBackend(ctx, uri)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	ss, ok := b.(SecretStore)
	if !ok {
		return nil, fmt.Errorf("vault: %s cannot hold secrets", u.Redacted())
	}
	v, err := ss.Secret(ctx, name)
	switch {
	case err == nil:
		if len(v) != size {
			return nil, fmt.Errorf("vault: secret %s has %d bytes, want %d", u.Redacted(), len(v), size)
		}
		return v, nil
	case !errors.Is(err, ErrNotFound):
		return nil, fmt.Errorf("read secret %s: %w", u.Redacted(), err)
	}
	v = make([]byte, size)
	if _, err := rand.Read(v); err != nil {
		return nil, err
	}
	if err := ss.SetSecret(ctx, name, v); err != nil {
		return nil, fmt.Errorf("store secret %s: %w", u.Redacted(), err)
	}
	return v, nil
}
