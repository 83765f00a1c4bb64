package main

import (
	"context"
	"errors"

	"github.com/azaion/loader/internal/config"
	"github.com/azaion/loader/internal/device"
)

// loadIdentity reads the device identity named by DEVICE_CONFIG (SPEC §10); nil when there is
// none. A file that exists but cannot be used stops the service with exit code 2 and one line
// naming the file and the fix, as ssh refuses a private key that others can read.
func loadIdentity(ctx context.Context, cfg config.Config) (*device.Identity, error) {
	id, err := device.Load(ctx, cfg.DeviceConfig, device.Options{Owner: -1})
	if de := (*device.Error)(nil); errors.As(err, &de) {
		return nil, usageError{err}
	}
	return id, err
}
