package main

import (
	"context"
	"errors"
)

func runAgent(ctx context.Context, env *environment, args []string) error {
	return errors.New("agent: not implemented yet")
}
