package tpm

// The storage primary key, derived from the owner seed and a TCG template at every use, so
// nothing persists in the TPM.

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/azaion/loader/internal/device"
)

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
