package tpm

// Sealing and unsealing: the data is cut into sealed data objects of at most maxChunk bytes
// under the storage key, optionally bound to the current values of some PCRs.

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/azaion/loader/internal/device"
)

// maxChunk is what one sealed data object holds (MAX_SYM_DATA of TPM 2.0 Part 2).
const maxChunk = 128

// SealOptions choose how Seal seals.
type SealOptions struct {
	SRK  string // device.SRKECC (the default when empty) or device.SRKRSA
	PCRs []int  // bind the unseal to the current values of these SHA-256 PCRs
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
