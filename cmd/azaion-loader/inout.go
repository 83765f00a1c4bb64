package main

// The input, output and interruption plumbing the subcommands share (archive, device seal,
// unlock): "-" for the standard input or output, atomic output files, SIGINT.

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
)

// openInput opens path ("-" = the command's standard input).
func openInput(ctx context.Context, path string) (io.Reader, func(), error) {
	if path == "-" {
		return stdinFrom(ctx), func() {}, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	return f, func() { f.Close() }, nil
}

// writeOutput runs write into path ("-" = stdout), as writeAtomic does.
func writeOutput(path string, perm os.FileMode, stdout io.Writer, write func(io.Writer) error) error {
	if path == "-" {
		return write(stdout)
	}
	return writeAtomic(path, perm, write)
}

// writeAtomic runs write into a temp file next to path, renamed to path only on success, so a
// failed or interrupted run never leaves a half file that looks complete, nor loses the old
// one; the file gets the permissions perm.
func writeAtomic(path string, perm os.FileMode, write func(io.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	err = write(tmp)
	if err == nil {
		err = tmp.Chmod(perm)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}

// stdinKey carries the reader a command uses as its standard input (see withStdin).
type stdinKey struct{}

// withStdin makes commands run with ctx read r instead of os.Stdin ("--in -", a piped password),
// so that tests can drive them in-process without touching the process's os.Stdin.
func withStdin(ctx context.Context, r io.Reader) context.Context {
	return context.WithValue(ctx, stdinKey{}, r)
}

// stdinFrom is the standard input of a command run with ctx: os.Stdin unless withStdin says else.
func stdinFrom(ctx context.Context) io.Reader {
	if r, ok := ctx.Value(stdinKey{}).(io.Reader); ok && r != nil {
		return r
	}
	return os.Stdin
}

// interrupted says that a command failed because ctx ended (SIGINT during a big archive),
// keeping the cause; other errors pass as they are.
func interrupted(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil {
		return errors.Join(errors.New("interrupted"), err)
	}
	return err
}
