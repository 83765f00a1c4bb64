package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/azaion/loader/internal/archive"
	"github.com/azaion/loader/internal/security"
)

// archiveUsage is the synopsis of the archive subcommands.
const archiveUsage = `Usage:
  azaion-loader archive encrypt --key-fragment FILE --in TAR|- --out ENC|-
  azaion-loader archive decrypt --key-fragment FILE --in ENC|- --out TAR|-
  azaion-loader archive verify  --key-fragment FILE --in ENC|-`

// runArchive handles the image archive of SPEC §8 and §13: IV ‖ AES-256-CBC(PKCS#7(tar)) with
// the key SHA-256(key fragment). encrypt makes one (a release pipeline runs
// `docker save … | azaion-loader archive encrypt --key-fragment F --in - --out images.enc`),
// decrypt gives the tar back, verify checks it on a device before an unlock.
func runArchive(ctx context.Context, args []string, _ func(string) string, stdout, _ io.Writer) error {
	if len(args) == 0 {
		return usagef("archive needs a subcommand: encrypt, decrypt or verify")
	}
	switch args[0] {
	case "-h", "--help", "-help":
		fmt.Fprintln(stdout, archiveUsage)
		return nil
	case "encrypt":
		return runArchiveEncrypt(ctx, args[1:], stdout)
	case "decrypt":
		return runArchiveDecrypt(ctx, args[1:], stdout)
	case "verify":
		return runArchiveVerify(ctx, args[1:], stdout)
	}
	return usagef("archive: unknown subcommand %q (encrypt, decrypt or verify)", args[0])
}

// archiveFlags parses the flags the archive subcommands share; out is nil for verify.
func archiveFlags(name, synopsis, inHelp, outHelp string, args []string, stdout io.Writer) (fragPath, in string, out *string, err error) {
	fs := newFlagSet("archive "+name, synopsis, stdout)
	frag := fs.String("key-fragment", "", "file holding the raw key fragment the Resource API serves")
	inFlag := fs.String("in", "", inHelp)
	if outHelp != "" {
		out = fs.String("out", "", outHelp)
	}
	if err := parse(fs, args); err != nil {
		return "", "", nil, err
	}
	if *frag == "" || *inFlag == "" || out != nil && *out == "" {
		need := "--key-fragment and --in"
		if out != nil {
			need = "--key-fragment, --in and --out"
		}
		return "", "", nil, usagef("archive %s needs %s", name, need)
	}
	return *frag, *inFlag, out, nil
}

// archiveKey reads the key fragment file and returns the archive key. The error names the
// file, never its content.
func archiveKey(fragPath string) ([]byte, error) {
	fragment, err := os.ReadFile(fragPath)
	if err != nil {
		return nil, fmt.Errorf("cannot read the key fragment file: %w", err)
	}
	if len(fragment) == 0 {
		return nil, fmt.Errorf("key fragment %s is empty", fragPath)
	}
	key := security.ArchiveKey(fragment)
	clear(fragment)
	return key, nil
}

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

func runArchiveEncrypt(ctx context.Context, args []string, stdout io.Writer) error {
	fragPath, in, out, err := archiveFlags("encrypt", "archive encrypt --key-fragment FILE --in TAR|- --out ENC|-",
		"tar to encrypt, - for stdin", "encrypted archive to write, - for stdout", args, stdout)
	if err != nil {
		return err
	}
	key, err := archiveKey(fragPath)
	if err != nil {
		return err
	}
	src, done, err := openInput(ctx, in)
	if err != nil {
		return err
	}
	defer done()
	// The archive is read by the loader, often as another user than the release step.
	return writeOutput(*out, 0o644, stdout, func(w io.Writer) error {
		enc, err := security.NewEncrypter(w, key)
		if err != nil {
			return err
		}
		if _, err := io.Copy(enc, contextReader{ctx, src}); err != nil {
			return err
		}
		return enc.Close()
	})
}

// runArchiveDecrypt writes the tar inside an archive. To a file, nothing is left behind unless
// every padding byte checked out; to stdout, the tar streams out as it is decrypted, and a bad
// end is reported (exit 1) after the bytes before it were written.
func runArchiveDecrypt(ctx context.Context, args []string, stdout io.Writer) error {
	fragPath, in, out, err := archiveFlags("decrypt", "archive decrypt --key-fragment FILE --in ENC|- --out TAR|-",
		"encrypted archive to decrypt, - for stdin", "tar to write, - for stdout", args, stdout)
	if err != nil {
		return err
	}
	key, err := archiveKey(fragPath)
	if err != nil {
		return err
	}
	src, done, err := openInput(ctx, in)
	if err != nil {
		return err
	}
	defer done()
	err = writeOutput(*out, 0o600, stdout, func(w io.Writer) error {
		_, err := io.Copy(w, security.NewDecrypter(contextReader{ctx, src}, key))
		return err
	})
	switch {
	case errors.Is(err, security.ErrTruncated):
		return fmt.Errorf("archive decrypt %s: %w: it is not a 16-byte IV and whole 16-byte blocks", in, archive.ErrTruncated)
	case errors.Is(err, security.ErrWrongKey):
		return fmt.Errorf("archive decrypt %s: the padding of its last block is wrong: %w, or the archive is truncated or damaged (archive verify tells which)", in, archive.ErrWrongKey)
	}
	return err
}

// runArchiveVerify decrypts and checks an archive without writing anything (SPEC §13) and
// lists its images; any problem is an error (exit 1) that says which.
func runArchiveVerify(ctx context.Context, args []string, stdout io.Writer) error {
	fragPath, in, _, err := archiveFlags("verify", "archive verify --key-fragment FILE --in ENC|-",
		"encrypted archive to check, - for stdin", "", args, stdout)
	if err != nil {
		return err
	}
	key, err := archiveKey(fragPath)
	if err != nil {
		return err
	}
	src, done, err := openInput(ctx, in)
	if err != nil {
		return err
	}
	defer done()
	rep, err := archive.Verify(ctx, src, key)
	if err != nil {
		if ctx.Err() != nil {
			return errors.Join(errors.New("interrupted"), err)
		}
		return fmt.Errorf("archive verify %s: %w", in, err)
	}
	layers := 0
	for _, im := range rep.Images {
		layers += im.Layers
		if len(im.RepoTags) == 0 {
			fmt.Fprintf(stdout, "<untagged> %s\n", im.Config)
		}
		for _, t := range im.RepoTags {
			fmt.Fprintln(stdout, t)
		}
	}
	fmt.Fprintf(stdout, "OK: %d images, %d layers; %d files match their SHA-256; a %d-byte tar in the %s layout, every other byte as a tar writer writes it\n",
		len(rep.Images), layers, rep.Checked, rep.TarBytes, rep.Layout)
	return nil
}

// writeOutput runs write into path ("-" = stdout). A file is written to a temp name and renamed
// only on success, so a failed run never leaves a half archive that looks complete; it gets
// the permissions perm.
func writeOutput(path string, perm os.FileMode, stdout io.Writer, write func(io.Writer) error) error {
	if path == "-" {
		return write(stdout)
	}
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
