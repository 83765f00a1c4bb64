package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/azaion/loader/internal/config"
	"github.com/azaion/loader/internal/device"
	"github.com/azaion/loader/internal/streams"
	"github.com/azaion/loader/internal/tpm"
)

const deviceUsage = `Usage: azaion-loader device seal|info [flags]

  seal   seal a device config (SPEC §10) to this device's TPM (SPEC §12):
           azaion-loader device seal --in device.conf|- --out device.sealed [--tpm DEV] [--pcrs LIST]
  info   whether a TPM answers, and what DEVICE_CONFIG holds (none, plain, sealed); never a secret

"azaion-loader device seal --help" and "azaion-loader device info --help" list the flags.
`

// runDevice is "azaion-loader device": sealing the device identity to the TPM and telling
// what a device holds.
func runDevice(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("device: say seal or info (see azaion-loader device --help)")
	}
	switch args[0] {
	case "seal":
		return runDeviceSeal(ctx, args[1:], getenv, stdout)
	case "info":
		return runDeviceInfo(ctx, args[1:], getenv, stdout)
	case "-h", "--help", "-help", "help":
		fmt.Fprint(stdout, deviceUsage)
		return nil
	}
	return usagef("device: unknown subcommand %q (seal or info)", args[0])
}

const sealSynopsis = `device seal --in device.conf|- --out device.sealed [--tpm DEV] [--pcrs LIST]

Seals the device config to this device's TPM: the output holds only objects the TPM wrapped
under its storage key, so it opens on this TPM only. Run it on the device itself, and pipe the
config in (--in -) so the password never touches the device's disk. Point DEVICE_CONFIG at the
output (mode 0600, owned by the loader's user).

--pcrs binds the seal also to the current values of these PCRs (e.g. 7, Secure Boot state).
PCR-bound secrets stop unsealing after a firmware update or a boot configuration change: the
device must then be resealed from the provisioning record. Without --pcrs (the default) the file
opens on this TPM whatever it booted.`

func runDeviceSeal(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := newFlagSet("device seal", sealSynopsis, stdout)
	cl := config.RegisterOnly(fs.FlagSet, getenv, "TPM_DEVICE", "TPM_TIMEOUT")
	fs.Var(aliasFlag{fs.FlagSet, "tpm-device"}, "tpm", "the TPM to seal to: the same as --tpm-device")
	in := fs.String("in", "", "the plain device config to seal (AZAION_DEVICE_EMAIL, AZAION_DEVICE_PASSWORD), - for standard input")
	out := fs.String("out", "", "the sealed file to write (mode 0600; replaced atomically)")
	pcrs := fs.String("pcrs", "", "comma-separated SHA-256 PCRs to bind to, e.g. 7 (default none; stops unsealing after a firmware update)")
	srk := fs.String("srk", device.SRKECC, "storage key template: "+device.SRKECC+" or "+device.SRKRSA)
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := cl.Load()
	if err != nil {
		return usageError{err}
	}
	if *in == "" || *out == "" {
		return usagef("device seal needs --in and --out")
	}
	pcrList, err := device.ParsePCRList(*pcrs)
	if err != nil {
		return usagef("invalid --pcrs: %v", err)
	}
	if *srk != device.SRKECC && *srk != device.SRKRSA {
		return usagef("invalid --srk %q: %s or %s", *srk, device.SRKECC, device.SRKRSA)
	}
	plain, err := readPlainConfig(ctx, *in)
	if err != nil {
		return err
	}
	id, perr := device.Parse(plain)
	clear(plain)
	if perr != nil {
		return usagef("the device config to seal (%s) is not valid: %v", inName(*in), perr)
	}
	canon := id.Canonical()
	c := &tpm.Client{Device: cfg.TPMDevice, Timeout: cfg.TPMTimeout}
	sealed, err := c.Seal(ctx, canon, tpm.SealOptions{SRK: *srk, PCRs: pcrList})
	clear(canon)
	if err != nil {
		return fmt.Errorf("seal: %w", err)
	}
	// Mode 0600, replaced atomically: a failed or interrupted seal never leaves a half file
	// where the old one was.
	err = writeAtomic(*out, 0o600, func(w io.Writer) error {
		_, err := w.Write(sealed.Marshal())
		return err
	})
	if err != nil {
		return fmt.Errorf("seal: write %s: %w", *out, err)
	}
	fmt.Fprintf(stdout, "sealed the device config to the TPM at %s (storage key %s, PCRs %s): %s\n",
		cfg.TPMDevice, sealed.SRK, device.FormatPCRs(sealed.PCRs), *out)
	return nil
}

func inName(in string) string {
	if in == "-" {
		return "standard input"
	}
	return in
}

// readPlainConfig reads the config to seal, bounded as device.Load bounds it.
func readPlainConfig(ctx context.Context, in string) ([]byte, error) {
	src, done, err := openInput(ctx, in)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	defer done()
	const limit = device.MaxFileSize
	data, err := io.ReadAll(io.LimitReader(streams.WithContext(ctx, src), limit+1))
	if err != nil {
		clear(data)
		return nil, fmt.Errorf("seal: read %s: %w", inName(in), interrupted(ctx, err))
	}
	if len(data) > limit {
		clear(data)
		return nil, usagef("the device config to seal (%s) is larger than %d bytes", inName(in), limit)
	}
	if device.LooksSealed(data) {
		clear(data)
		return nil, usagef("%s is already sealed: seal the plain device config from the provisioning record", inName(in))
	}
	return data, nil
}

// aliasFlag is a second name for a registered flag (--tpm for --tpm-device).
type aliasFlag struct {
	fs   *flag.FlagSet
	name string
}

func (a aliasFlag) String() string {
	if a.fs == nil {
		return ""
	}
	return a.fs.Lookup(a.name).Value.String()
}
func (a aliasFlag) Set(v string) error { return a.fs.Set(a.name, v) }

func runDeviceInfo(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := newFlagSet("device info", "device info [--device-config PATH] [--tpm-device DEV]\n\nPrints whether a TPM answers (manufacturer, firmware) and what DEVICE_CONFIG holds (none, plain, sealed); never a secret.", stdout)
	cl := config.RegisterOnly(fs.FlagSet, getenv, "DEVICE_CONFIG", "TPM_DEVICE", "TPM_TIMEOUT")
	fs.Var(aliasFlag{fs.FlagSet, "tpm-device"}, "tpm", "the same as --tpm-device")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := cl.Load()
	if err != nil {
		return usageError{err}
	}
	// One bound for all of it, as at start.
	ctx, cancel := context.WithTimeout(ctx, cfg.TPMTimeout)
	defer cancel()
	c := &tpm.Client{Device: cfg.TPMDevice, Timeout: cfg.TPMTimeout}
	var b bytes.Buffer
	info, tpmErr := c.Info(ctx)
	if errors.Is(tpmErr, context.DeadlineExceeded) {
		tpmErr = fmt.Errorf("%w: the TPM at %s did not answer within %s", tpm.ErrNotAnswering, cfg.TPMDevice, cfg.TPMTimeout)
	}
	if tpmErr != nil {
		fmt.Fprintf(&b, "TPM %s: does not answer: %v\n", cfg.TPMDevice, tpmErr)
	} else {
		fmt.Fprintf(&b, "TPM %s: answers; manufacturer %q, vendor %q, firmware %s\n", cfg.TPMDevice, info.Manufacturer, info.Vendor, info.Firmware)
	}

	d := device.Describe(cfg.DeviceConfig, device.Options{Owner: -1})
	fmt.Fprintf(&b, "DEVICE_CONFIG %s: %s", cfg.DeviceConfig, d.Kind)
	switch {
	case d.Kind == device.KindNone:
		b.WriteString(" (no file: the loader waits for POST /login and /unlock)\n")
	case d.Problem != nil:
		fmt.Fprintf(&b, "; the loader refuses it: %v\n", d.Problem)
	case d.Kind == device.KindPlain:
		b.WriteString("; permissions OK; the password is in clear on this disk: consider azaion-loader device seal\n")
	case d.Kind == device.KindSealed:
		fmt.Fprintf(&b, " (storage key %s, PCRs %s); permissions OK; %s\n", d.Sealed.SRK, device.FormatPCRs(d.Sealed.PCRs), sealedBy(ctx, c, *d.Sealed, tpmErr))
	}
	_, err = io.Copy(stdout, &b)
	return err
}

// sealedBy tells whether this TPM sealed s, by its storage key's name: no unseal, no secret.
func sealedBy(ctx context.Context, c *tpm.Client, s device.Sealed, tpmErr error) string {
	if tpmErr != nil {
		return "whether this TPM sealed it is unknown (the TPM does not answer)"
	}
	name, err := c.StorageKeyName(ctx, s.SRK)
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, tpm.ErrNotAnswering):
		return "whether this TPM sealed it is unknown (the TPM does not answer)"
	case err != nil:
		return "whether this TPM sealed it is unknown: " + err.Error()
	case bytes.Equal(name, s.SRKName):
		return "sealed by this TPM"
	}
	return "sealed for another TPM (or this TPM was cleared): reseal it on this device"
}
