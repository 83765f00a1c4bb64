package main

import (
	"context"
	"fmt"
	"io"
	"runtime"

	"github.com/azaion/loader/internal/hardware"
)

func runVersion(_ context.Context, args []string, _ func(string) string, stdout, _ io.Writer) error {
	fs := newFlagSet("version", "version", stdout)
	if err := parse(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "azaion-loader %s (commit %s, %s, %s/%s)\n", version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}

func runHWInfo(_ context.Context, args []string, _ func(string) string, stdout, _ io.Writer) error {
	fs := newFlagSet("hwinfo", "hwinfo [--root DIR]", stdout)
	root := fs.String("root", "/", "root directory to read /proc and /sys from (tests use fixture trees)")
	if err := parse(fs, args); err != nil {
		return err
	}
	fmt.Fprintln(stdout, hardware.Fingerprint(*root))
	return nil
}
