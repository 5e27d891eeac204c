package main

import (
	"context"
	"errors"
)

func runPrune(ctx context.Context, env *environment, args []string) error {
	return errors.New("prune: not implemented yet")
}
