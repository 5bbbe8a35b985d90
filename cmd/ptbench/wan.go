package main

import (
	"context"
	"errors"
)

func runWAN(ctx context.Context, args []string) error { return errors.New("todo") }
func runProfile(ctx context.Context, args []string) error { return errors.New("todo") }
