package main

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/azaion/loader/internal/config"
	"github.com/azaion/loader/internal/hardware"
	"github.com/azaion/loader/internal/refapi"
	"github.com/azaion/loader/internal/resourceapi"
	"github.com/azaion/loader/internal/resources"
)

// Dev mode's demo account and model.
const (
	devEmail     = "demo@azaion.local"
	devPassword  = "demo-password"
	devFolder    = "models"
	devModel     = "demo-model.bin"
	devModelSize = 1<<20 + 5
)

// devEnvironment is what `serve --dev` runs in-process on loopback: the reference Resource API
// and an in-memory S3 server standing in for the CDN.
type devEnvironment struct {
	ref     *refapi.Server
	refURL  string
	servers []*http.Server
	dataDir string
}

// startDev starts the stand-ins and points cfg at them.
func startDev(ctx context.Context, cfg *config.Config) (*devEnvironment, error) {
	d := &devEnvironment{}
	var err error
	if d.dataDir, err = os.MkdirTemp("", "azaion-dev-*"); err != nil {
		return nil, err
	}
	s3URL, err := d.listen(gofakes3.New(s3mem.New()).Server())
	if err != nil {
		d.Close()
		return nil, err
	}
	secret := make([]byte, 32)
	fragment := make([]byte, 64)
	crand.Read(secret)
	crand.Read(fragment)
	d.ref, err = refapi.New(refapi.Config{
		Users:       []refapi.User{{ID: "1", Email: devEmail, Password: devPassword, Role: "Admin"}},
		DataDir:     d.dataDir,
		JWTSecret:   secret,
		KeyFragment: fragment,
		CDN: refapi.CDNSettings{
			Host:                s3URL,
			DownloaderAccessKey: "dev-downloader", DownloaderAccessSecret: "dev-downloader-secret",
			UploaderAccessKey: "dev-uploader", UploaderAccessSecret: "dev-uploader-secret",
		},
	})
	if err != nil {
		d.Close()
		return nil, err
	}
	if d.refURL, err = d.listen(d.ref); err != nil {
		d.Close()
		return nil, err
	}
	cfg.ResourceAPIURL = d.refURL
	return d, nil
}

// listen serves h on a free loopback port and returns its URL.
func (d *devEnvironment) listen(h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	d.servers = append(d.servers, srv)
	go srv.Serve(ln) // stopped by Close
	return "http://" + ln.Addr().String(), nil
}

// seed uploads the demo model through the loader's own upload path, as the demo user, with a
// session of its own so the loader itself still starts logged out.
func (d *devEnvironment) seed(ctx context.Context, l *loader) error {
	api, err := resourceapi.New(l.cfg.ResourceAPIURL, hardware.Fingerprint("/"), resourceapi.Options{Logger: l.log})
	if err != nil {
		return err
	}
	if err := api.Login(ctx, devEmail, devPassword); err != nil {
		return fmt.Errorf("demo login: %w", err)
	}
	svc, err := resources.New(api, resources.Options{CacheDir: l.cfg.ModelCacheDir, Logger: l.log})
	if err != nil {
		return err
	}
	defer svc.Close()
	if err := svc.Upload(ctx, devFolder, devModel, bytes.NewReader(demoModel())); err != nil {
		return fmt.Errorf("demo model: %w", err)
	}
	return nil
}

// demoModel is deterministic so a newcomer can compare checksums between runs.
func demoModel() []byte {
	b := make([]byte, devModelSize)
	r := rand.NewChaCha8([32]byte{'a', 'z', 'a', 'i', 'o', 'n'})
	r.Read(b)
	return b
}

func (d *devEnvironment) printTryOut(w io.Writer, addr string) {
	host, port, _ := net.SplitHostPort(addr)
	if host == "" || host == "::" || host == "0.0.0.0" {
		host = "127.0.0.1"
	}
	base := "http://" + net.JoinHostPort(host, port)
	fmt.Fprintf(w, `
Dev mode: reference Resource API at %s, in-memory S3 CDN, demo user %s / %s.
A demo model %s/%s (%d bytes) is uploaded. Try:

  curl -s %s/health
  curl -s -X POST %s/login -H 'Content-Type: application/json' -d '{"email":"%s","password":"%s"}'
  curl -s %s/status
  curl -s -X POST %s/load/%s -H 'Content-Type: application/json' -d '{"folder":"%s"}' -o %s
  curl -s -X POST %s/upload/my-model.bin -F folder=models -F data=@%s
  curl -s %s/openapi.json

`, d.refURL, devEmail, devPassword, devFolder, devModel, devModelSize,
		base, base, devEmail, devPassword, base, base, devModel, devFolder, devModel, base, devModel, base)
}

func (d *devEnvironment) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range d.servers {
		s.Shutdown(ctx)
	}
	if d.dataDir != "" {
		os.RemoveAll(d.dataDir)
	}
}
