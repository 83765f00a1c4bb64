// Package device reads the device identity of SPEC §10: the credentials of the device's own
// CompanionPC user, provisioned at flash time into DEVICE_CONFIG, from which the loader logs in
// and unlocks with nobody at a keyboard.
//
// The file holds a password, so it is treated as ssh treats a private key: a file that group or
// others may read or write, or that belongs to another user, is refused, and so is a file with a
// missing or unknown key. Errors name the file, the line and the key, never a value.
//
// The file may instead be sealed to the device's TPM (SPEC §12, sealed.go): it then holds only
// objects the TPM wrapped, is told apart by its first line, and is opened through an Unsealer
// (internal/tpm) given in Options. One that cannot be opened (another TPM, damaged, PCRs that
// changed) is an *Error like a bad plain file; a TPM that does not answer is a plain error.
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

// The keys of a device config file.
const (
	KeyEmail    = "AZAION_DEVICE_EMAIL"
	KeyPassword = "AZAION_DEVICE_PASSWORD"
)

// MaxFileSize bounds what Load reads, and what "device seal" takes: a device config is a few
// lines.
const MaxFileSize = 64 << 10

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
	// TPM unseals a sealed device config (SPEC §12); nil refuses sealed files.
	TPM Unsealer
}

// Unsealer opens a sealed device config: internal/tpm satisfies it. Unseal returns the plain
// device config, which the caller clears after parsing. Its errors wrap ErrSealedForAnotherTPM,
// ErrSealedDamaged or ErrPCRsChanged when the TPM refuses the file; any other error (the TPM does
// not answer within ctx) is not the file's fault.
type Unsealer interface {
	Unseal(ctx context.Context, s Sealed) ([]byte, error)
}

// Load reads the device identity from path. A file that does not exist is no identity: nil and
// no error. A file that exists but cannot be used is an *Error. ctx bounds the work of reading
// it (a sealed file is unsealed by a TPM that may hang). The file's content, and a sealed
// file's plaintext, are cleared from memory once parsed.
func Load(ctx context.Context, path string, opts Options) (*Identity, error) {
	data, err := read(path, opts)
	if data == nil || err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		clear(data)
		return nil, err
	}
	if LooksSealed(data) {
		return loadSealed(ctx, path, data, opts)
	}
	id, err := parsePlain(path, data)
	clear(data)
	if err != nil {
		return nil, err
	}
	return &id, nil
}

// read returns the content of the device config at path after the checks of checkFile; nil
// and no error when there is no file.
func read(path string, opts Options) ([]byte, error) {
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
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		clear(data)
		return nil, &Error{Path: path, Problem: "cannot be read (" + describe(err) + ")", Fix: "check the file"}
	}
	if len(data) > MaxFileSize {
		clear(data)
		return nil, &Error{Path: path, Problem: fmt.Sprintf("is larger than %d bytes", MaxFileSize),
			Fix: "it must hold only " + KeyEmail + " and " + KeyPassword}
	}
	return data, nil
}

func parsePlain(path string, data []byte) (Identity, error) {
	id, err := Parse(data)
	if err != nil {
		return Identity{}, &Error{Path: path, Problem: err.Error(),
			Fix: "it must hold exactly the keys " + KeyEmail + " and " + KeyPassword + ", one KEY=VALUE per line"}
	}
	return id, nil
}

// loadSealed unseals a sealed device config through opts.TPM. The plain text lives only in
// memory, and only until it is parsed.
func loadSealed(ctx context.Context, path string, data []byte, opts Options) (*Identity, error) {
	s, err := ParseSealed(data)
	if err != nil {
		return nil, sealedFileError(path, err)
	}
	if opts.TPM == nil {
		return nil, &Error{Path: path, Problem: "is sealed to a TPM, and no TPM is configured", Fix: "set TPM_DEVICE"}
	}
	plain, err := opts.TPM.Unseal(ctx, s)
	switch {
	case errors.Is(err, ErrSealedForAnotherTPM):
		return nil, &Error{Path: path, Problem: "cannot be unsealed: it was sealed for another TPM (a copied disk, a swapped board, or this TPM was cleared)", Fix: resealFix(path)}
	case errors.Is(err, ErrPCRsChanged):
		return nil, &Error{Path: path, Problem: "cannot be unsealed: the values of the PCRs it is bound to (" + FormatPCRs(s.PCRs) + ") changed since it was sealed (a firmware or boot change)", Fix: resealFix(path)}
	case errors.Is(err, ErrSealedDamaged):
		return nil, sealedFileError(path, err)
	case err != nil:
		return nil, fmt.Errorf("device config %s: %w", path, err)
	}
	id, perr := Parse(plain)
	clear(plain)
	if perr != nil {
		return nil, &Error{Path: path, Problem: "was unsealed, but what it holds is not a device config: " + perr.Error(), Fix: resealFix(path)}
	}
	return &id, nil
}

// resealFix is what to do about a sealed file that cannot be opened.
func resealFix(path string) string {
	return "reseal it on this device from the provisioning record: azaion-loader device seal --in - --out " + path
}

// sealedFileError is the *Error of a sealed file that is damaged (ErrSealedDamaged, from the
// parser or the TPM) or of a format this loader does not read.
func sealedFileError(path string, err error) *Error {
	if errors.Is(err, ErrSealedDamaged) {
		return &Error{Path: path, Problem: "is a sealed device config, and it is " + err.Error(), Fix: resealFix(path)}
	}
	return &Error{Path: path, Problem: "is a sealed device config this loader cannot read: " + err.Error(), Fix: "use the loader that sealed it, or " + resealFix(path)}
}

// Kind is what a DEVICE_CONFIG path holds.
type Kind string

// The kinds of device config.
const (
	KindNone   Kind = "none"
	KindPlain  Kind = "plain"
	KindSealed Kind = "sealed"
)

// Description is what a device config path holds, found without a TPM and without keeping or
// showing any value from it.
type Description struct {
	Kind Kind
	// Problem is why Load would refuse the file as far as can be told without a TPM (its
	// permissions, its syntax, a damaged sealed file); nil when none is seen.
	Problem error
	Sealed  *Sealed // the sealed file's fields, when it is sealed and readable
}

// Describe says what path holds, for "azaion-loader device info".
func Describe(path string, opts Options) Description {
	if path == "" {
		return Description{Kind: KindNone}
	}
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		return Description{Kind: KindNone}
	}
	data, err := read(path, opts)
	if err != nil {
		// The kind is still worth telling when the content can be seen (a sealed file with
		// lax permissions); when it cannot, say "plain" only if the file is not readable at all.
		d := Description{Kind: KindPlain, Problem: err}
		if raw, rerr := os.ReadFile(path); rerr == nil {
			if LooksSealed(raw) {
				d.Kind = KindSealed
			}
			clear(raw)
		}
		return d
	}
	defer clear(data)
	if data == nil {
		return Description{Kind: KindNone}
	}
	if LooksSealed(data) {
		s, err := ParseSealed(data)
		if err != nil {
			return Description{Kind: KindSealed, Problem: sealedFileError(path, err)}
		}
		return Description{Kind: KindSealed, Sealed: &s}
	}
	_, err = parsePlain(path, data)
	return Description{Kind: KindPlain, Problem: err}
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
