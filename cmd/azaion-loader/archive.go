package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/azaion/loader/internal/security"
)

// runArchive makes an archive that unlock accepts: IV ‖ AES-256-CBC(PKCS#7(tar)) with the key
// SHA-256(key fragment), so a release pipeline can run
// `docker save … | azaion-loader archive encrypt --key-fragment F --in - --out images.enc`.
func runArchive(ctx context.Context, args []string, _ func(string) string, stdout, _ io.Writer) error {
	if len(args) == 0 || args[0] != "encrypt" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
			fmt.Fprintln(stdout, "Usage: azaion-loader archive encrypt --key-fragment FILE --in TAR|- --out ENC|-")
			return nil
		}
		return usagef("archive: the only subcommand is \"encrypt\"")
	}
	fs := newFlagSet("archive encrypt", "archive encrypt --key-fragment FILE --in TAR|- --out ENC|-", stdout)
	fragPath := fs.String("key-fragment", "", "file holding the raw key fragment the Resource API serves")
	in := fs.String("in", "", "tar to encrypt, - for stdin")
	out := fs.String("out", "", "encrypted archive to write, - for stdout")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	if *fragPath == "" || *in == "" || *out == "" {
		return usagef("archive encrypt needs --key-fragment, --in and --out")
	}
	fragment, err := os.ReadFile(*fragPath)
	if err != nil {
		return fmt.Errorf("cannot read the key fragment file: %w", err)
	}
	if len(fragment) == 0 {
		return fmt.Errorf("key fragment %s is empty", *fragPath)
	}
	src := stdinFrom(ctx)
	if *in != "-" {
		f, err := os.Open(*in)
		if err != nil {
			return err
		}
		defer f.Close()
		src = f
	}
	return writeOutput(*out, stdout, func(w io.Writer) error {
		enc, err := security.NewEncrypter(w, security.ArchiveKey(fragment))
		if err != nil {
			return err
		}
		if _, err := io.Copy(enc, contextReader{ctx, src}); err != nil {
			return err
		}
		return enc.Close()
	})
}

// writeOutput runs write into path ("-" = stdout). A file is written to a temp name and renamed
// only on success, so a failed run never leaves a half archive that looks complete.
func writeOutput(path string, stdout io.Writer, write func(io.Writer) error) error {
	if path == "-" {
		return write(stdout)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	err = write(tmp)
	if err == nil {
		// CreateTemp makes 0600; the archive is read by the loader, often as another user.
		err = tmp.Chmod(0o644)
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

// contextReader stops a long copy when ctx is cancelled (SIGINT during a big archive).
type contextReader struct {
	ctx context.Context
	r   io.Reader
}

func (c contextReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, errors.Join(errors.New("interrupted"), err)
	}
	return c.r.Read(p)
}
