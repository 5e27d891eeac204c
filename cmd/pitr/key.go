package main

import (
	"context"
	"fmt"
	"time"

	"github.com/pitr-dev/pitr/storage/crypt"
)

// runKey handles `pitr key generate FILE` and `pitr key public FILE`.
func runKey(_ context.Context, env *environment, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: pitr key generate FILE | pitr key public FILE", errUsage)
	}
	switch args[0] {
	case "generate":
		fs := newFlagSet(env, "key generate", "key generate FILE   (writes a new age private key, mode 0600, and prints its public key)")
		pos, err := parseInterspersed(fs, args[1:])
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return fmt.Errorf("%w: pitr key generate takes the file to write the private key to", errUsage)
		}
		pub, err := crypt.GenerateIdentityFile(pos[0], time.Now().UTC().Format(time.RFC3339))
		if err != nil {
			return fmt.Errorf("generate key: %w", err)
		}
		env.log.Info("private key written: keep it (and a copy) away from the database host; put the public key in encryption_recipients",
			"file", pos[0], "public_key", pub)
		fmt.Fprintln(env.stdout, pub)
		return nil
	case "public":
		fs := newFlagSet(env, "key public", "key public FILE   (prints the public key of each private key in an identity file)")
		pos, err := parseInterspersed(fs, args[1:])
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return fmt.Errorf("%w: pitr key public takes an identity file", errUsage)
		}
		ids, err := crypt.LoadIdentities(pos[0])
		if err != nil {
			return err
		}
		for _, id := range ids {
			fmt.Fprintln(env.stdout, id.Recipient().String())
		}
		return nil
	}
	return fmt.Errorf("%w: unknown key subcommand %q (want generate or public)", errUsage, args[0])
}
