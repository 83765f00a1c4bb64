// Package tpm seals the device identity to the device's TPM 2.0 and unseals it (SPEC §12), over
// github.com/google/go-tpm (pure Go).
//
// A sealed data object is made under a storage primary key created from the TCG Provisioning
// Guidance SRK template. The primary is derived from the TPM's owner seed, so it is recreated
// identically at each unseal and nothing needs to persist in the TPM; another TPM, or this one
// after a clear, derives another key and cannot load the object. Sessions are salted with the
// primary's public key and encrypt the secret in both directions, so the plaintext never
// crosses the bus in clear.
//
// Every operation opens its own connection and closes it before returning (a simulator's unixio
// socket serves one client at a time), and runs within Client.Timeout: a TPM that does not
// answer makes the call fail with ErrNotAnswering when the timeout ends.
package tpm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/azaion/loader/internal/device"
)

// DefaultDevice is the kernel's resource-managed TPM device (TPM_DEVICE).
const DefaultDevice = "/dev/tpmrm0"

// maxChunk is what one sealed data object holds (MAX_SYM_DATA of TPM 2.0 Part 2).
const maxChunk = 128

// ErrNotAnswering: the TPM did not answer within the timeout.
var ErrNotAnswering = errors.New("TPM not answering")

// Client talks to one TPM. Device is a TPM character device (/dev/tpmrm0) or "unix://PATH", the
// socket of a TPM simulator (swtpm socket --server type=unixio). The zero Timeout means 30 s.
type Client struct {
	Device  string
	Timeout time.Duration
}

// SealOptions choose how Seal seals.
type SealOptions struct {
	SRK  string // device.SRKECC (the default when empty) or device.SRKRSA
	PCRs []int  // bind the unseal to the current values of these SHA-256 PCRs
}

// Info is what a TPM says about itself.
type Info struct {
	Manufacturer string // TPM_PT_MANUFACTURER as 4 ASCII characters, e.g. "IBM " or "NTC "
	Vendor       string // TPM_PT_VENDOR_STRING_1..4
	Firmware     string // TPM_PT_FIRMWARE_VERSION_1 and _2 as 16-bit parts, then as they are
}

func (c *Client) timeout() time.Duration {
	if c.Timeout <= 0 {
		return 30 * time.Second
	}
	return c.Timeout
}

// do runs f over a fresh connection within the timeout, and turns an expired timeout into
// ErrNotAnswering whatever go-tpm made of it.
func (c *Client) do(ctx context.Context, f func(t transport.TPM) error) error {
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	raw, err := dial(ctx, c.Device)
	if err == nil {
		t := &conn{ctx: ctx, raw: raw}
		if !raw.managed() {
			err = flushLeftovers(t)
		}
		if err == nil {
			err = f(t)
		}
		raw.Close()
	}
	switch {
	case err == nil:
		return nil
	case parent.Err() != nil:
		return parent.Err()
	case ctx.Err() != nil, errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: the TPM at %s did not answer within %s", ErrNotAnswering, c.Device, c.timeout())
	}
	return err
}

// flushLeftovers flushes the transient objects and sessions loaded in a TPM without a resource
// manager (a simulator's socket). A simulator serves one connection at a time, so whatever is
// loaded while this one is open belongs to a client that went away mid-operation, such as a
// start that timed out while the simulator was stopped, which it then ran after waking up; left
// there, they would fill its three object slots and make every later unseal fail.
func flushLeftovers(t transport.TPM) error {
	for _, first := range []tpm2.TPMHandle{0x80000000, 0x02000000, 0x03000000} { // transient objects, HMAC and policy sessions
		rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: uint32(first), PropertyCount: 64}.Execute(t)
		if err != nil {
			return fmt.Errorf("list loaded handles: %w", err)
		}
		handles, err := rsp.CapabilityData.Data.Handles()
		if err != nil {
			return fmt.Errorf("list loaded handles: %w", err)
		}
		for _, h := range handles.Handle {
			if h>>24 != first>>24 {
				break
			}
			if _, err := (tpm2.FlushContext{FlushHandle: h}).Execute(t); err != nil {
				return fmt.Errorf("flush a leftover handle 0x%08x: %w", uint32(h), err)
			}
		}
	}
	return nil
}

// Info asks the TPM who made it and which firmware it runs.
func (c *Client) Info(ctx context.Context) (Info, error) {
	var info Info
	err := c.do(ctx, func(t transport.TPM) error {
		rsp, err := tpm2.GetCapability{
			Capability:    tpm2.TPMCapTPMProperties,
			Property:      uint32(tpm2.TPMPTManufacturer),
			PropertyCount: 8, // MANUFACTURER .. FIRMWARE_VERSION_2
		}.Execute(t)
		if err != nil {
			return fmt.Errorf("TPM at %s: get capability: %w", c.Device, err)
		}
		props, err := rsp.CapabilityData.Data.TPMProperties()
		if err != nil {
			return fmt.Errorf("TPM at %s: get capability: %w", c.Device, err)
		}
		var fw1, fw2 uint32
		var vendor []byte
		for _, p := range props.TPMProperty {
			switch p.Property {
			case tpm2.TPMPTManufacturer:
				info.Manufacturer = strings.TrimRight(ascii(p.Value), " ")
			case tpm2.TPMPTVendorString1, tpm2.TPMPTVendorString2, tpm2.TPMPTVendorString3, tpm2.TPMPTVendorString4:
				vendor = append(vendor, ascii(p.Value)...)
			case tpm2.TPMPTFirmwareVersion1:
				fw1 = p.Value
			case tpm2.TPMPTFirmwareVersion2:
				fw2 = p.Value
			}
		}
		info.Vendor = string(bytes.TrimRight(vendor, " \x00"))
		info.Firmware = fmt.Sprintf("%d.%d.%d.%d (0x%08x 0x%08x)", fw1>>16, fw1&0xffff, fw2>>16, fw2&0xffff, fw1, fw2)
		return nil
	})
	return info, err
}

// ascii is a 4-byte TPM property as text, unprintable bytes shown as '.'.
func ascii(v uint32) string {
	b := []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
	for i, c := range b {
		if c != 0 && (c < 0x20 || c > 0x7e) {
			b[i] = '.'
		}
	}
	return string(bytes.TrimRight(b, "\x00"))
}

// Seal seals data (at most device.MaxObjects × 128 bytes) to this TPM.
func (c *Client) Seal(ctx context.Context, data []byte, opts SealOptions) (device.Sealed, error) {
	if opts.SRK == "" {
		opts.SRK = device.SRKECC
	}
	if len(data) == 0 || len(data) > device.MaxObjects*maxChunk {
		return device.Sealed{}, fmt.Errorf("can seal 1 to %d bytes, not %d", device.MaxObjects*maxChunk, len(data))
	}
	out := device.Sealed{SRK: opts.SRK, PCRs: opts.PCRs}
	err := c.do(ctx, func(t transport.TPM) error {
		srk, err := createSRK(t, opts.SRK)
		if err != nil {
			return err
		}
		defer srk.flush(t)
		out.SRKName = srk.name.Buffer

		tmpl := tpm2.TPMTPublic{
			Type:    tpm2.TPMAlgKeyedHash,
			NameAlg: tpm2.TPMAlgSHA256,
			ObjectAttributes: tpm2.TPMAObject{
				FixedTPM:     true, // never leaves this TPM
				FixedParent:  true,
				UserWithAuth: len(opts.PCRs) == 0, // with PCRs, only the policy opens it
				NoDA:         true,
			},
		}
		if len(opts.PCRs) > 0 {
			digest, err := pcrPolicy(t, opts.PCRs)
			if err != nil {
				return err
			}
			tmpl.AuthPolicy = tpm2.TPM2BDigest{Buffer: digest}
		}
		for chunk := range slicesChunk(data, maxChunk) {
			rsp, err := tpm2.Create{
				ParentHandle: tpm2.AuthHandle{
					Handle: srk.handle, Name: srk.name,
					Auth: tpm2.HMAC(tpm2.TPMAlgSHA256, 16, tpm2.AESEncryption(128, tpm2.EncryptIn), tpm2.Salted(srk.handle, srk.public)),
				},
				InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
					Data: tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: chunk}),
				}},
				InPublic: tpm2.New2B(tmpl),
			}.Execute(t)
			if err != nil {
				return fmt.Errorf("TPM at %s: create the sealed object: %w", c.Device, err)
			}
			out.Objects = append(out.Objects, device.Object{
				Public:  tpm2.Marshal(rsp.OutPublic),
				Private: tpm2.Marshal(rsp.OutPrivate),
			})
		}
		return nil
	})
	if err != nil {
		return device.Sealed{}, err
	}
	return out, nil
}

// slicesChunk yields data in pieces of at most n bytes.
func slicesChunk(data []byte, n int) func(func([]byte) bool) {
	return func(yield func([]byte) bool) {
		for len(data) > 0 {
			k := min(n, len(data))
			if !yield(data[:k]) {
				return
			}
			data = data[k:]
		}
	}
}

// Unseal opens a sealed device config with this TPM (device.Unsealer). Its errors wrap
// device.ErrSealedForAnotherTPM when this TPM's storage key is not the one the file was sealed
// under, device.ErrSealedDamaged when this TPM refuses the file's objects, device.ErrPCRsChanged
// when the PCR policy fails, and ErrNotAnswering when the TPM does not answer in time.
func (c *Client) Unseal(ctx context.Context, s device.Sealed) ([]byte, error) {
	plain := make([]byte, 0, len(s.Objects)*maxChunk) // never regrown: no stray copy of the plaintext
	err := c.do(ctx, func(t transport.TPM) error {
		srk, err := createSRK(t, s.SRK)
		if err != nil {
			return err
		}
		defer srk.flush(t)
		if !bytes.Equal(srk.name.Buffer, s.SRKName) {
			return fmt.Errorf("%w: this TPM's storage key is not the one it was sealed under", device.ErrSealedForAnotherTPM)
		}
		for i, o := range s.Objects {
			part, err := c.unsealObject(t, srk, o, s.PCRs)
			if err != nil {
				if len(s.Objects) > 1 {
					err = fmt.Errorf("sealed object %d: %w", i+1, err)
				}
				clear(plain)
				return err
			}
			if len(plain)+len(part) > cap(plain) {
				clear(part)
				clear(plain)
				return fmt.Errorf("%w: a sealed object holds more than %d bytes", device.ErrSealedDamaged, maxChunk)
			}
			plain = append(plain, part...)
			clear(part)
		}
		return nil
	})
	if err != nil {
		clear(plain)
		return nil, err
	}
	return plain, nil
}

func (c *Client) unsealObject(t transport.TPM, srk *primary, o device.Object, pcrs []int) ([]byte, error) {
	pub, err := tpm2.Unmarshal[tpm2.TPM2BPublic](o.Public)
	if err != nil {
		return nil, fmt.Errorf("%w: its public area does not decode", device.ErrSealedDamaged)
	}
	priv, err := tpm2.Unmarshal[tpm2.TPM2BPrivate](o.Private)
	if err != nil {
		return nil, fmt.Errorf("%w: its private area does not decode", device.ErrSealedDamaged)
	}
	loaded, err := tpm2.Load{
		ParentHandle: tpm2.AuthHandle{Handle: srk.handle, Name: srk.name, Auth: tpm2.PasswordAuth(nil)},
		InPrivate:    *priv,
		InPublic:     *pub,
	}.Execute(t)
	if err != nil {
		// The storage key is the one it was sealed under, so a refusal of the object is the
		// file's fault: its integrity HMAC fails, or its public area is not a valid object.
		var fmt1 tpm2.TPMFmt1Error
		if errors.Is(err, tpm2.TPMRCIntegrity) {
			return nil, fmt.Errorf("%w: the TPM's integrity check of the sealed object failed", device.ErrSealedDamaged)
		}
		if errors.As(err, &fmt1) {
			return nil, fmt.Errorf("%w: the TPM refused the sealed object (%v)", device.ErrSealedDamaged, err)
		}
		return nil, fmt.Errorf("TPM at %s: load the sealed object: %w", c.Device, err)
	}
	defer tpm2.FlushContext{FlushHandle: loaded.ObjectHandle}.Execute(t)

	// The response is encrypted with a session key salted by the SRK: the plaintext does not
	// cross the bus in clear.
	opts := []tpm2.AuthOption{tpm2.AESEncryption(128, tpm2.EncryptOut), tpm2.Salted(srk.handle, srk.public)}
	auth := tpm2.HMAC(tpm2.TPMAlgSHA256, 16, opts...)
	if len(pcrs) > 0 {
		sel := pcrSelection(pcrs)
		auth = tpm2.Policy(tpm2.TPMAlgSHA256, 16, func(t transport.TPM, h tpm2.TPMISHPolicy, _ tpm2.TPM2BNonce) error {
			_, err := tpm2.PolicyPCR{PolicySession: h, Pcrs: sel}.Execute(t)
			return err
		}, opts...)
	}
	rsp, err := tpm2.Unseal{ItemHandle: tpm2.AuthHandle{Handle: loaded.ObjectHandle, Name: loaded.Name, Auth: auth}}.Execute(t)
	switch {
	case err == nil:
		return rsp.OutData.Buffer, nil
	case len(pcrs) > 0 && errors.Is(err, tpm2.TPMRCPolicyFail):
		return nil, fmt.Errorf("%w (PCRs %s)", device.ErrPCRsChanged, device.FormatPCRs(pcrs))
	}
	return nil, fmt.Errorf("TPM at %s: unseal: %w", c.Device, err)
}

// StorageKeyName is the name of this TPM's storage primary key for the given SRK template: it
// tells, without unsealing, whether a sealed file was sealed by this TPM.
func (c *Client) StorageKeyName(ctx context.Context, srkTemplate string) ([]byte, error) {
	var name []byte
	err := c.do(ctx, func(t transport.TPM) error {
		srk, err := createSRK(t, srkTemplate)
		if err != nil {
			return err
		}
		name = srk.name.Buffer
		return srk.flush(t)
	})
	return name, err
}

// primary is a loaded storage primary key.
type primary struct {
	handle tpm2.TPMHandle
	name   tpm2.TPM2BName
	public tpm2.TPMTPublic
}

func (p *primary) flush(t transport.TPM) error {
	_, err := tpm2.FlushContext{FlushHandle: p.handle}.Execute(t)
	return err
}

// createSRK makes the storage primary key from the TCG template under the owner hierarchy (whose
// authorisation is empty on a provisioned device, as the TCG guidance and every OS expect).
func createSRK(t transport.TPM, name string) (*primary, error) {
	var tmpl tpm2.TPMTPublic
	switch name {
	case device.SRKECC:
		tmpl = tpm2.ECCSRKTemplate
	case device.SRKRSA:
		tmpl = tpm2.RSASRKTemplate
	default:
		return nil, fmt.Errorf("unknown SRK template %q (want %s or %s)", name, device.SRKECC, device.SRKRSA)
	}
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(tmpl),
	}.Execute(t)
	if err != nil {
		if errors.Is(err, tpm2.TPMRCBadAuth) || errors.Is(err, tpm2.TPMRCAuthFail) {
			return nil, fmt.Errorf("create the storage key: the TPM's owner hierarchy has a password (the loader needs it empty, as the TCG provisioning guidance says): %w", err)
		}
		return nil, fmt.Errorf("create the storage key (%s): %w", name, err)
	}
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}.Execute(t)
		return nil, fmt.Errorf("create the storage key: %w", err)
	}
	return &primary{handle: rsp.ObjectHandle, name: rsp.Name, public: *pub}, nil
}

func pcrSelection(pcrs []int) tpm2.TPMLPCRSelection {
	idx := make([]uint, len(pcrs))
	for i, p := range pcrs {
		idx[i] = uint(p)
	}
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(idx...),
	}}}
}

// pcrPolicy is the policy digest of PolicyPCR over the PCRs' current values, computed by the
// TPM in a trial session.
func pcrPolicy(t transport.TPM, pcrs []int) ([]byte, error) {
	sess, closeSess, err := tpm2.PolicySession(t, tpm2.TPMAlgSHA256, 16, tpm2.Trial())
	if err != nil {
		return nil, fmt.Errorf("start a trial policy session: %w", err)
	}
	defer closeSess()
	if _, err := (tpm2.PolicyPCR{PolicySession: sess.Handle(), Pcrs: pcrSelection(pcrs)}).Execute(t); err != nil {
		return nil, fmt.Errorf("PCR policy over PCRs %s: %w", device.FormatPCRs(pcrs), err)
	}
	d, err := tpm2.PolicyGetDigest{PolicySession: sess.Handle()}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("PCR policy digest: %w", err)
	}
	return d.PolicyDigest.Buffer, nil
}
