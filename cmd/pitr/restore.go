package main

import (
	"context"
	"errors"
)

func runRestore(ctx context.Context, env *environment, args []string) error {
	return errors.New("restore: not implemented yet")
}
