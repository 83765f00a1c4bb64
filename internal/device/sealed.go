package device

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// SealedHeader is the first line of a sealed device config (SPEC §12): what tells it apart from a
// plain one.
const SealedHeader = "AZAION-SEALED-DEVICE-CONFIG v1"

// sealedComment is for a person who opens the file. It names no product: what is fixed in the
// file must not look like an account's email.
const sealedComment = "# A device identity sealed to one TPM: only that TPM opens it. Reseal from the provisioning record."

// The SRK templates a sealed file may name: the TCG "Provisioning Guidance" storage root keys.
const (
	SRKECC = "ecc-p256"
	SRKRSA = "rsa-2048"
)

// Sealed is a device config sealed to a TPM. It holds only what the TPM wrapped: the sealed data
// object's public and private areas, which only the TPM that made them can load, and what is
// needed to ask that TPM again (the SRK template, the PCRs of the policy). Nothing in it is secret.
type Sealed struct {
	SRK string // SRKECC or SRKRSA: the template of the storage primary key it was sealed under
	// SRKName is the name of that primary key on the TPM that sealed it. The primary is made from
	// the TPM's own seed, so another TPM (or this one after a clear) makes a different name: that
	// is how "sealed for another TPM" is told apart from "damaged".
	SRKName []byte
	PCRs    []int // SHA-256 PCRs the unseal policy binds to; none: no policy
	// Objects are the sealed data objects, in order. A TPM seals at most 128 bytes in one
	// object, so a longer identity takes several, whose unsealed contents are concatenated.
	Objects []Object
}

// Object is one sealed data object as the TPM returned it from TPM2_Create.
type Object struct {
	Public  []byte // TPM2B_PUBLIC
	Private []byte // TPM2B_PRIVATE: encrypted and integrity-protected by the TPM
}

// MaxObjects bounds the sealed data objects of a file (8 × 128 bytes of identity).
const MaxObjects = 8

// Errors of a sealed file that the TPM will not open. Unsealers wrap them; Load turns them into
// an *Error (exit code 2). Anything else an unsealer returns (a TPM that does not answer) is a
// plain error: the service manager should try again.
var (
	ErrSealedForAnotherTPM = errors.New("sealed for another TPM")
	ErrSealedDamaged       = errors.New("damaged")
	ErrPCRsChanged         = errors.New("the PCR values it is bound to have changed since it was sealed")
)

// maxPCR bounds the PCR indices a sealed file may name (PC Client TPMs have 24).
const maxPCR = 31

// Marshal writes s in the sealed file format: the header, a comment, one "key: value" line per
// field and a last line with the SHA-256 of everything above it.
func (s Sealed) Marshal() []byte {
	var b bytes.Buffer
	b.WriteString(SealedHeader + "\n" + sealedComment + "\n")
	fmt.Fprintf(&b, "srk: %s\n", s.SRK)
	fmt.Fprintf(&b, "srk-name: %s\n", hex.EncodeToString(s.SRKName))
	fmt.Fprintf(&b, "pcrs: %s\n", FormatPCRs(s.PCRs))
	for _, o := range s.Objects {
		fmt.Fprintf(&b, "object: %s %s\n", base64.StdEncoding.EncodeToString(o.Public), base64.StdEncoding.EncodeToString(o.Private))
	}
	sum := sha256.Sum256(b.Bytes())
	fmt.Fprintf(&b, "sha256: %s\n", hex.EncodeToString(sum[:]))
	return b.Bytes()
}

// FormatPCRs is the "pcrs" value of a sealed file: "none" or "sha256:7,8".
func FormatPCRs(pcrs []int) string {
	if len(pcrs) == 0 {
		return "none"
	}
	s := make([]string, len(pcrs))
	for i, p := range pcrs {
		s[i] = strconv.Itoa(p)
	}
	return "sha256:" + strings.Join(s, ",")
}

// ParsePCRList reads a list of PCR indices such as "7" or "0,2,7" (the --pcrs flag; "" and
// "none" are no PCRs). The result is sorted and without repeats.
func ParsePCRList(v string) ([]int, error) {
	v = strings.TrimSpace(v)
	if v == "" || v == "none" {
		return nil, nil
	}
	var pcrs []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 || n > maxPCR {
			return nil, fmt.Errorf("%q is not a PCR index (0-%d)", strings.TrimSpace(f), maxPCR)
		}
		pcrs = append(pcrs, n)
	}
	slices.Sort(pcrs)
	return slices.Compact(pcrs), nil
}

// LooksSealed reports whether data is (or was, before it was damaged) a sealed device config
// rather than a plain one: its first line is the header or nearly so, or it has the sealed
// format's fields. A plain device config has neither, so a damaged sealed file is reported as
// damaged rather than as a plain file with a syntax error.
func LooksSealed(data []byte) bool {
	first, _, _ := bytes.Cut(data, []byte("\n"))
	if bytes.HasPrefix(first, []byte("AZAION-SEALED-")) || nearly(first, []byte(SealedHeader)) {
		return true
	}
	for _, field := range []string{"\nsrk-name:", "\nobject:", "\nsha256:"} {
		if bytes.Contains(data, []byte(field)) {
			return true
		}
	}
	return false
}

// nearly: a and b have the same length and differ in at most 3 bytes.
func nearly(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	diff := 0
	for i := range a {
		if a[i] != b[i] {
			diff++
		}
	}
	return diff <= 3
}

// ParseSealed reads a sealed device config. Any inconsistency (a changed byte anywhere is caught
// by the checksum) is an error wrapping ErrSealedDamaged that says what is wrong, never a value.
func ParseSealed(data []byte) (Sealed, error) {
	damaged := func(format string, a ...any) (Sealed, error) {
		return Sealed{}, fmt.Errorf("%w: %s", ErrSealedDamaged, fmt.Sprintf(format, a...))
	}
	if len(data) > MaxFileSize {
		return damaged("larger than %d bytes", MaxFileSize)
	}
	if !bytes.HasSuffix(data, []byte("\n")) {
		return damaged("it does not end with a newline (truncated?)")
	}
	body := data[:len(data)-1]
	i := bytes.LastIndexByte(body, '\n')
	if i < 0 {
		return damaged("it has a single line")
	}
	body, last := data[:i+1], string(data[i+1:len(data)-1])
	want, ok := strings.CutPrefix(last, "sha256: ")
	if !ok {
		return damaged("the last line is not its checksum")
	}
	sum := sha256.Sum256(body)
	if want != hex.EncodeToString(sum[:]) { // as written: a changed letter case is a change too
		return damaged("its checksum does not match its content")
	}
	lines := strings.Split(strings.TrimSuffix(string(body), "\n"), "\n")
	if lines[0] != SealedHeader {
		if strings.HasPrefix(lines[0], "AZAION-SEALED-DEVICE-CONFIG v") {
			return Sealed{}, fmt.Errorf("its format %q is not one this loader reads (%q): a newer loader sealed it",
				strings.TrimPrefix(lines[0], "AZAION-SEALED-DEVICE-CONFIG "), "v1")
		}
		return damaged("the first line is not %q", SealedHeader)
	}
	var s Sealed
	fields := []struct {
		key string
		set func(v string) error
	}{
		{"srk", func(v string) error {
			if v != SRKECC && v != SRKRSA {
				return fmt.Errorf("unknown SRK template (want %s or %s)", SRKECC, SRKRSA)
			}
			s.SRK = v
			return nil
		}},
		{"srk-name", func(v string) (err error) { s.SRKName, err = hexField(v); return }},
		{"pcrs", func(v string) error {
			if v == "none" {
				return nil
			}
			list, ok := strings.CutPrefix(v, "sha256:")
			if !ok {
				return errors.New("not none or sha256:LIST")
			}
			pcrs, err := ParsePCRList(list)
			if err != nil {
				return err
			}
			if len(pcrs) == 0 || FormatPCRs(pcrs) != v {
				return errors.New("not a sorted list of PCR indices")
			}
			s.PCRs = pcrs
			return nil
		}},
	}
	rest := lines[1:]
	if len(rest) > 0 && strings.HasPrefix(rest[0], "#") {
		rest = rest[1:]
	}
	if len(rest) < len(fields)+1 {
		return damaged("it has %d fields, want at least %d", len(rest), len(fields)+1)
	}
	for n, f := range fields {
		v, ok := strings.CutPrefix(rest[n], f.key+": ")
		if !ok {
			return damaged("field %d is not %q", n+1, f.key)
		}
		if err := f.set(v); err != nil {
			return damaged("%s: %v", f.key, err)
		}
	}
	objects := rest[len(fields):]
	if len(objects) > MaxObjects {
		return damaged("it has %d sealed objects, at most %d", len(objects), MaxObjects)
	}
	for n, line := range objects {
		v, ok := strings.CutPrefix(line, "object: ")
		if !ok {
			return damaged("field %d is not %q", len(fields)+n+1, "object")
		}
		pub, priv, ok := strings.Cut(v, " ")
		var o Object
		var err error
		if o.Public, err = b64Field(pub); err != nil || !ok {
			return damaged("object %d: the public area is not base64", n+1)
		}
		if o.Private, err = b64Field(priv); err != nil {
			return damaged("object %d: the private area is not base64", n+1)
		}
		s.Objects = append(s.Objects, o)
	}
	return s, nil
}

func hexField(v string) ([]byte, error) {
	b, err := hex.DecodeString(v)
	if err != nil || len(b) == 0 {
		return nil, errors.New("not hexadecimal")
	}
	return b, nil
}

func b64Field(v string) ([]byte, error) {
	b, err := base64.StdEncoding.Strict().DecodeString(v)
	if err != nil || len(b) < 2 {
		return nil, errors.New("not base64")
	}
	return b, nil
}
