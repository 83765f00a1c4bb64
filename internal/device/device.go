// Package device reads the device identity of SPEC §10: the credentials of the device's own
// CompanionPC user, provisioned at flash time into DEVICE_CONFIG, from which the loader logs in
// and unlocks with nobody at a keyboard.
//
// The file holds a password, so it is treated as ssh treats a private key: a file that group or
// others may read or write, or that belongs to another user, is refused, and so is a file with a
// missing or unknown key. Errors name the file, the line and the key, never a value.
package device

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"syscall"
)

// DefaultPath is where a provisioned device keeps its identity (DEVICE_CONFIG).
const DefaultPath = "/etc/azaion/device.conf"

// The keys of a device config file.
const (
	KeyEmail    = "AZAION_DEVICE_EMAIL"
	KeyPassword = "AZAION_DEVICE_PASSWORD"
)

// maxFileSize bounds what Load reads: a device config is a few lines.
const maxFileSize = 64 << 10

// Identity is the device's credentials. Its String, GoString and LogValue never show them, so a
// stray %v or log attribute cannot leak them.
type Identity struct {
	Email    string
	Password string
}

const redacted = "device identity (redacted)"

func (Identity) String() string                { return redacted }
func (Identity) GoString() string              { return redacted }
func (Identity) LogValue() slog.Value          { return slog.StringValue(redacted) }
func (id Identity) Format(f fmt.State, _ rune) { io.WriteString(f, redacted) }

// Error is a device config file that exists but cannot be used. The service refuses to start
// with it (exit code 2), printing Error(): the file, what is wrong and how to fix it.
type Error struct {
	Path    string
	Problem string // what is wrong; never contains a value from the file
	Fix     string // what to do about it
}

func (e *Error) Error() string {
	return fmt.Sprintf("device config %s: %s; %s", e.Path, e.Problem, e.Fix)
}

// Options tune Load. The zero value reads plain files.
type Options struct {
	// Owner is the user id the file must belong to (besides root); negative means the
	// process's effective user id.
	Owner int
}

// Load reads the device identity from path. A file that does not exist is no identity: nil and
// no error. A file that exists but cannot be used is an *Error. ctx bounds the work of reading
// it (a sealed file is unsealed by a device that may hang).
func Load(ctx context.Context, path string, opts Options) (*Identity, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, &Error{Path: path, Problem: "cannot be read (" + describe(err) + ")",
			Fix: "make it readable by the loader's user only: chown <loader user> " + path + " && chmod 600 " + path}
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, &Error{Path: path, Problem: "cannot be read (" + describe(err) + ")", Fix: "check the file"}
	}
	if err := checkFile(path, fi, opts); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, &Error{Path: path, Problem: "cannot be read (" + describe(err) + ")", Fix: "check the file"}
	}
	if len(data) > maxFileSize {
		return nil, &Error{Path: path, Problem: fmt.Sprintf("is larger than %d bytes", maxFileSize),
			Fix: "it must hold only " + KeyEmail + " and " + KeyPassword}
	}
	id, perr := Parse(data)
	clear(data)
	if perr != nil {
		return nil, &Error{Path: path, Problem: perr.Error(),
			Fix: "it must hold exactly the keys " + KeyEmail + " and " + KeyPassword + ", one KEY=VALUE per line"}
	}
	return &id, nil
}

// checkFile refuses what ssh refuses for a private key: anything but a regular file, access for
// group or others, another owner than the loader's user or root.
func checkFile(path string, fi fs.FileInfo, opts Options) error {
	if !fi.Mode().IsRegular() {
		return &Error{Path: path, Problem: "is not a regular file", Fix: "write the identity into a plain file"}
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return &Error{Path: path, Problem: fmt.Sprintf("is accessible by group or others (mode %04o)", perm),
			Fix: "run: chmod 600 " + path}
	}
	owner := opts.Owner
	if owner < 0 {
		owner = os.Geteuid()
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != owner && st.Uid != 0 {
		return &Error{Path: path, Problem: fmt.Sprintf("belongs to user id %d, not to the loader's user (id %d) or root", st.Uid, owner),
			Fix: fmt.Sprintf("run: chown %d %s", owner, path)}
	}
	return nil
}

// describe is the reason of a file-system error without the path it repeats.
func describe(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}
