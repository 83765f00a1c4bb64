package tpm_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/azaion/loader/internal/device"
	"github.com/azaion/loader/internal/testenv"
	"github.com/azaion/loader/internal/tpm"
)

func TestQuick(t *testing.T) {
	a := testenv.NewSWTPM(t)
	c := &tpm.Client{Device: a.Device, Timeout: 10 * time.Second}
	ctx := context.Background()
	info, err := c.Info(ctx)
	t.Logf("%+v %v", info, err)
	data := bytes.Repeat([]byte("x"), 300)
	for _, srk := range []string{device.SRKECC, device.SRKRSA} {
		t0 := time.Now()
		s, err := c.Seal(ctx, data, tpm.SealOptions{SRK: srk})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s seal %v %d objects", srk, time.Since(t0), len(s.Objects))
		t0 = time.Now()
		got, err := c.Unseal(ctx, s)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatal(err)
		}
		t.Logf("unseal %v", time.Since(t0))
		b := testenv.NewSWTPM(t)
		_, err = (&tpm.Client{Device: b.Device}).Unseal(ctx, s)
		t.Log(err, errors.Is(err, device.ErrSealedForAnotherTPM))
	}
}
