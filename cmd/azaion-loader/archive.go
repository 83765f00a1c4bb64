package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/azaion/loader/internal/archive"
	"github.com/azaion/loader/internal/security"
	"github.com/azaion/loader/internal/streams"
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

// archiveJob is what every archive subcommand starts from: the archive key, the input open,
// and where the output goes ("" for verify, which writes nothing).
type archiveJob struct {
	key     []byte
	in, out string
	src     io.Reader // fails once ctx ends (SIGINT during a big archive)
	close   func()
}

// startArchiveJob parses the flags the archive subcommands share (--out only when outHelp is
// set), reads the key fragment and opens the input. The caller closes the job.
func startArchiveJob(ctx context.Context, name, synopsis, inHelp, outHelp string, args []string, stdout io.Writer) (*archiveJob, error) {
	fs := newFlagSet("archive "+name, synopsis, stdout)
	frag := fs.String("key-fragment", "", "file holding the raw key fragment the Resource API serves")
	in := fs.String("in", "", inHelp)
	var out *string
	if outHelp != "" {
		out = fs.String("out", "", outHelp)
	}
	if err := parse(fs, args); err != nil {
		return nil, err
	}
	if *frag == "" || *in == "" || out != nil && *out == "" {
		need := "--key-fragment and --in"
		if out != nil {
			need = "--key-fragment, --in and --out"
		}
		return nil, usagef("archive %s needs %s", name, need)
	}
	key, err := archiveKey(*frag)
	if err != nil {
		return nil, err
	}
	src, done, err := openInput(ctx, *in)
	if err != nil {
		return nil, err
	}
	j := &archiveJob{key: key, in: *in, src: streams.WithContext(ctx, src), close: done}
	if out != nil {
		j.out = *out
	}
	return j, nil
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

func runArchiveEncrypt(ctx context.Context, args []string, stdout io.Writer) error {
	j, err := startArchiveJob(ctx, "encrypt", "archive encrypt --key-fragment FILE --in TAR|- --out ENC|-",
		"tar to encrypt, - for stdin", "encrypted archive to write, - for stdout", args, stdout)
	if err != nil {
		return err
	}
	defer j.close()
	// The archive is read by the loader, often as another user than the release step.
	return interrupted(ctx, writeOutput(j.out, 0o644, stdout, func(w io.Writer) error {
		enc, err := security.NewEncrypter(w, j.key)
		if err != nil {
			return err
		}
		if _, err := io.Copy(enc, j.src); err != nil {
			return err
		}
		return enc.Close()
	}))
}

// runArchiveDecrypt writes the tar inside an archive. To a file, nothing is left behind unless
// every padding byte checked out; to stdout, the tar streams out as it is decrypted, and a bad
// end is reported (exit 1) after the bytes before it were written.
func runArchiveDecrypt(ctx context.Context, args []string, stdout io.Writer) error {
	j, err := startArchiveJob(ctx, "decrypt", "archive decrypt --key-fragment FILE --in ENC|- --out TAR|-",
		"encrypted archive to decrypt, - for stdin", "tar to write, - for stdout", args, stdout)
	if err != nil {
		return err
	}
	defer j.close()
	err = writeOutput(j.out, 0o600, stdout, func(w io.Writer) error {
		_, err := io.Copy(w, security.NewDecrypter(j.src, j.key))
		return err
	})
	switch {
	case errors.Is(err, security.ErrTruncated):
		return fmt.Errorf("archive decrypt %s: %w: it is not a 16-byte IV and whole 16-byte blocks", j.in, archive.ErrTruncated)
	case errors.Is(err, security.ErrWrongKey):
		return fmt.Errorf("archive decrypt %s: the padding of its last block is wrong: %w, or the archive is truncated or damaged (archive verify tells which)", j.in, archive.ErrWrongKey)
	}
	return interrupted(ctx, err)
}

// runArchiveVerify decrypts and checks an archive without writing anything (SPEC §13) and
// lists its images; any problem is an error (exit 1) that says which.
func runArchiveVerify(ctx context.Context, args []string, stdout io.Writer) error {
	j, err := startArchiveJob(ctx, "verify", "archive verify --key-fragment FILE --in ENC|-",
		"encrypted archive to check, - for stdin", "", args, stdout)
	if err != nil {
		return err
	}
	defer j.close()
	rep, err := archive.Verify(ctx, j.src, j.key)
	if err != nil {
		if ctx.Err() != nil {
			return interrupted(ctx, err)
		}
		return fmt.Errorf("archive verify %s: %w", j.in, err)
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
