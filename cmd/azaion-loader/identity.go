package main

import (
	"context"
	"errors"

	"github.com/azaion/loader/internal/config"
	"github.com/azaion/loader/internal/device"
	"github.com/azaion/loader/internal/tpm"
)

// loadIdentity reads the device identity named by DEVICE_CONFIG (SPEC §10); nil when there is
// none. A file that exists but cannot be used stops the service with exit code 2 and one line
// naming the file and the fix, as ssh refuses a private key that others can read. A sealed file
// (SPEC §12) is unsealed by the TPM at TPM_DEVICE within TPM_TIMEOUT; one sealed for another TPM,
// damaged, or bound to PCRs that changed is refused the same way (exit code 2), while a TPM that
// does not answer in time is a plain error (exit code 1), so the service manager tries again.
func loadIdentity(ctx context.Context, cfg config.Config) (*device.Identity, error) {
	id, err := device.Load(ctx, cfg.DeviceConfig, device.Options{
		Owner: -1,
		TPM:   &tpm.Client{Device: cfg.TPMDevice, Timeout: cfg.TPMTimeout},
	})
	if de := (*device.Error)(nil); errors.As(err, &de) {
		return nil, usageError{err}
	}
	return id, err
}
