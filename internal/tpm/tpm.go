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
)

// ErrNotAnswering: the TPM did not answer within the timeout.
var ErrNotAnswering = errors.New("TPM not answering")

// Client talks to one TPM. Device is a TPM character device (/dev/tpmrm0) or "unix://PATH", the
// socket of a TPM simulator (swtpm socket --server type=unixio). The zero Timeout means 30 s.
type Client struct {
	Device  string
	Timeout time.Duration
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
