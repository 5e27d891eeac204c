package storage

import (
	"context"
	"io"
	"strings"
)

// prefixed places every key of the inner store under a fixed prefix, so that
// one bucket or directory can hold several repositories and a repository can
// hold one subtree per database system.
type prefixed struct {
	inner  Store
	prefix string // empty or ends with "/"
}

// WithPrefix returns a Store whose keys live under prefix in inner.
func WithPrefix(inner Store, prefix string) Store {
	prefix = strings.Trim(prefix, "/")
	if prefix == "" {
		return inner
	}
	return &prefixed{inner: inner, prefix: prefix + "/"}
}

func (p *prefixed) Unwrap() Store { return p.inner }

func (p *prefixed) Put(ctx context.Context, key string, r io.Reader) error {
	return p.inner.Put(ctx, p.prefix+key, r)
}

func (p *prefixed) Open(ctx context.Context, key string, offset int64) (io.ReadCloser, error) {
	return p.inner.Open(ctx, p.prefix+key, offset)
}

func (p *prefixed) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	info, err := p.inner.Stat(ctx, p.prefix+key)
	info.Key = strings.TrimPrefix(info.Key, p.prefix)
	return info, err
}

func (p *prefixed) List(ctx context.Context, prefix string) ([]ObjectInfo, error) {
	infos, err := p.inner.List(ctx, p.prefix+prefix)
	for i := range infos {
		infos[i].Key = strings.TrimPrefix(infos[i].Key, p.prefix)
	}
	return infos, err
}

func (p *prefixed) Delete(ctx context.Context, key string) error {
	return p.inner.Delete(ctx, p.prefix+key)
}
