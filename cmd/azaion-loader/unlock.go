package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/azaion/loader/internal/config"
	"github.com/azaion/loader/internal/unlock"
)

// runUnlock runs the unlock workflow once from the command line and exits 0 only when the
// images are ready. The password comes from AZAION_PASSWORD, --password-file or a terminal
// prompt, never from a flag value (it would show in the process list).
func runUnlock(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("unlock", "unlock --email EMAIL [flags]", stdout)
	cl := config.Register(fs.FlagSet, getenv)
	email := fs.String("email", getenv("AZAION_EMAIL"), "account to log in with (env AZAION_EMAIL)")
	pwFile := fs.String("password-file", "", "file holding the password (else env AZAION_PASSWORD, else a prompt on a terminal)")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := cl.Load()
	if err != nil {
		return usageError{err}
	}
	cfg.LogDir = "" // a one-shot command logs to stderr only
	if *email == "" {
		return usagef("unlock needs --email or AZAION_EMAIL")
	}
	password, err := readPassword(stdinFrom(ctx), *pwFile, getenv, stderr)
	if err != nil {
		return err
	}
	// The log and the progress display share stderr: one lock keeps their writes whole.
	tty := isTerminal(stderr)
	out := &lockedWriter{w: stderr}
	l, err := newLoader(cfg, out, "/")
	if err != nil {
		return err
	}
	defer l.Close()

	done := make(chan struct{})
	progressDone := make(chan struct{})
	go func() { // owned here: stopped by closing done
		defer close(progressDone)
		showProgress(l.unlock, out, tty, done)
	}()
	err = l.unlock.Run(ctx, *email, password)
	close(done)
	<-progressDone
	if err != nil {
		return fmt.Errorf("unlock failed: %w", err)
	}
	fmt.Fprintln(stdout, "ready: all images are loaded")
	return nil
}

func readPassword(stdin io.Reader, file string, getenv func(string) string, stderr io.Writer) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("password file: %w", err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	if p := getenv("AZAION_PASSWORD"); p != "" {
		return p, nil
	}
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(stderr, "Password: ")
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(stderr)
		return string(b), err
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if p := strings.TrimRight(line, "\r\n"); p != "" {
		return p, nil
	}
	return "", usagef("no password: set AZAION_PASSWORD, use --password-file or run on a terminal (%v)", err)
}

// showProgress draws a progress bar on a terminal and writes a plain line per state change (and
// every 10 s) otherwise, until done is closed; then it shows the final state once more, so even a
// run shorter than one tick reports where it ended.
func showProgress(u *unlock.Unlocker, w io.Writer, tty bool, done <-chan struct{}) {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	var last unlock.State
	var lastLine time.Time
	for {
		select {
		case <-done:
			st := u.Status()
			switch line := progressLine(st, time.Since(start)); {
			case tty:
				fmt.Fprintf(w, "\r\033[K%s\n", line)
			case st.State != last:
				fmt.Fprintln(w, line)
			}
			return
		case <-tick.C:
		}
		st := u.Status()
		line := progressLine(st, time.Since(start))
		switch {
		case tty:
			fmt.Fprintf(w, "\r\033[K%s", line)
		case st.State != last || time.Since(lastLine) >= 10*time.Second:
			fmt.Fprintln(w, line)
			lastLine = time.Now()
		}
		last = st.State
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// lockedWriter serialises the writes of the logger and the progress display.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func progressLine(st unlock.Status, elapsed time.Duration) string {
	if st.BytesTotal <= 0 {
		return string(st.State)
	}
	const width = 30
	frac := float64(st.BytesDone) / float64(st.BytesTotal)
	filled := int(frac * width)
	rate := float64(st.BytesDone) / elapsed.Seconds() / (1 << 20)
	return fmt.Sprintf("%-15s [%s%s] %3.0f%% %s / %s %.1f MiB/s", st.State,
		strings.Repeat("=", filled), strings.Repeat(" ", width-filled), frac*100,
		mib(st.BytesDone), mib(st.BytesTotal), rate)
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
