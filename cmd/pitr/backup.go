package main

import (
	"context"
	"errors"
)

func runBackup(ctx context.Context, env *environment, args []string) error {
	return errors.New("backup: not implemented yet")
}
