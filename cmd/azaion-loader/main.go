// Command azaion-loader is the Azaion Loader: the service on an edge device that holds the keys,
// loads encrypted AI models and unlocks the device's Docker images. See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Set at build time with -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = "unknown"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// usageError is a mistake in the command line: reported in one line, exit code 2.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

func exitCode(err error, stderr io.Writer) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, new(usageError)):
		fmt.Fprintln(stderr, "azaion-loader:", err)
		return 2
	default:
		fmt.Fprintln(stderr, "azaion-loader:", err)
		return 1
	}
}

type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"serve", "run the HTTP service (the default command)", runServe},
		{"unlock", "run the unlock workflow once, with progress, and exit", runUnlock},
		{"archive", "the encrypted image archive: archive encrypt|decrypt|verify --key-fragment F --in IN [--out OUT]", runArchive},
		{"device", "seal the device identity to the TPM (device seal), or tell what the device holds (device info)", runDevice},
		{"hwinfo", "print this machine's hardware fingerprint string", runHWInfo},
		{"healthcheck", "exit 0 if the running service answers GET /health (for container health checks)", runHealthcheck},
		{"version", "print version, commit and Go version", runVersion},
	}
}

// run is the whole program, so tests can drive the real binary's logic in-process.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (len(args[0]) > 0 && args[0][0] == '-' && args[0] != "-h" && args[0] != "--help" && args[0] != "-help") {
		return runServe(ctx, args, getenv, stdout, stderr) // no command: serve, flags and all
	}
	name := args[0]
	switch name {
	case "-h", "--help", "-help", "help":
		printUsage(stdout)
		return nil
	}
	for _, c := range commands() {
		if c.name == name {
			return c.run(ctx, args[1:], getenv, stdout, stderr)
		}
	}
	return usagef("unknown command %q (see azaion-loader --help)", name)
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "Usage: azaion-loader [command] [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-11s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Every flag can also be set by its environment variable; \"azaion-loader <command> --help\" lists them.")
}

// flagSet is a flag set whose parse errors come back as one-line usage errors and whose --help
// prints the synopsis and every flag to stdout.
type flagSet struct {
	*flag.FlagSet
	synopsis string
	stdout   io.Writer
}

func newFlagSet(name, synopsis string, stdout io.Writer) *flagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {} // the flag package would print it on every error; parse decides
	return &flagSet{fs, synopsis, stdout}
}

func parse(fs *flagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(fs.stdout, "Usage: azaion-loader %s\n\nFlags:\n", fs.synopsis)
			fs.SetOutput(fs.stdout)
			fs.PrintDefaults()
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}
