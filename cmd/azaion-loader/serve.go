package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/azaion/loader/internal/cache"
	"github.com/azaion/loader/internal/cdn"
	"github.com/azaion/loader/internal/config"
	"github.com/azaion/loader/internal/device"
	"github.com/azaion/loader/internal/docker"
	"github.com/azaion/loader/internal/hardware"
	"github.com/azaion/loader/internal/httpapi"
	"github.com/azaion/loader/internal/logging"
	"github.com/azaion/loader/internal/metrics"
	"github.com/azaion/loader/internal/resourceapi"
	"github.com/azaion/loader/internal/resources"
	"github.com/azaion/loader/internal/unattended"
	"github.com/azaion/loader/internal/unlock"
)

// shutdownGrace is how long in-flight requests (a long /load stream) may run after SIGTERM.
const shutdownGrace = 30 * time.Second

// loader is the wired service: every part the HTTP API and the unlock command use.
type loader struct {
	cfg       config.Config
	log       *slog.Logger
	logCloser io.Closer
	api       *resourceapi.Client
	resources *resources.Service
	docker    *docker.Engine
	unlock    *unlock.Unlocker
	registry  *prometheus.Registry
	metrics   *metrics.Metrics
	// unattended logs in and unlocks with the device identity (SPEC §10); "off" without one.
	unattended *unattended.Runner
}

// newLoader builds the service from its configuration. rootFS is where the hardware
// fingerprint is read ("/" in production).
func newLoader(cfg config.Config, stderr io.Writer, rootFS string) (*loader, error) {
	log, closer, err := logging.New(logging.Options{Dir: cfg.LogDir, Level: cfg.LogLevel, JSON: cfg.LogFormat == "json", Stderr: stderr})
	if err != nil {
		return nil, err
	}
	l := &loader{cfg: cfg, log: log, logCloser: closer, registry: prometheus.NewRegistry()}
	l.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	l.metrics = metrics.New(l.registry)

	verifyKey, err := jwtVerifyKey(cfg)
	if err != nil {
		closer.Close()
		return nil, err
	}
	l.api, err = resourceapi.New(cfg.ResourceAPIURL, hardware.Fingerprint(rootFS), resourceapi.Options{
		Logger: log, VerifyKey: verifyKey, Observer: l.metrics, ConnectTimeout: cfg.UpstreamTimeout, HeaderTimeout: cfg.UpstreamTimeout,
		OnLogin: func() { l.resources.LoggedIn() }, // prefetch starts a round at each login
	})
	if err != nil {
		closer.Close()
		return nil, err
	}
	l.resources, err = resources.New(l.api, resources.Options{
		CacheDir: cfg.ModelCacheDir, CacheMax: cfg.ModelCacheMax, Logger: log, Observer: l.metrics,
		Prefetch: cfg.Prefetch, PrefetchInterval: cfg.PrefetchInterval, RateLimit: cfg.CDNRateLimit,
		CDNOptions: cdn.Options{StallTimeout: cfg.CDNStallTimeout, Logger: log},
	})
	if err != nil {
		closer.Close()
		return nil, err
	}
	metrics.WatchCache(l.registry, l.cacheFigures)
	l.docker, err = docker.New(cfg.DockerHost, docker.WithTimeout(cfg.DockerTimeout))
	if err != nil {
		closer.Close()
		return nil, err
	}
	l.unlock = unlock.New(unlock.Config{
		ArchivePath: cfg.ImagesPath, Images: cfg.DockerImages, Tag: cfg.APIVersion, Logger: log, Observer: l.metrics,
	}, l.api, l.docker)
	metrics.WatchUnlock(l.registry, func() (string, int64, int64) {
		st := l.unlock.Status()
		return string(st.State), st.BytesDone, st.BytesTotal
	})
	l.setIdentity(nil)
	return l, nil
}

// setIdentity gives the loader its device identity (nil: none) and the unattended work that
// uses it. Call it before handler; serveHTTP starts the work.
func (l *loader) setIdentity(id *device.Identity) {
	l.unattended = unattended.New(unattended.Config{
		Identity: id,
		Backoff:  unattended.Backoff{Max: l.cfg.RetryMaxDelay},
		Logger:   l.log,
		Observer: l.metrics,
	}, sessionAuth{l.api}, l.unlock)
}

// jwtVerifyKey turns JWT_SECRET / JWT_PUBLIC_KEY into the key the Resource API client verifies
// tokens with; nil means tokens are decoded unverified, as the seed did.
func jwtVerifyKey(cfg config.Config) (any, error) {
	switch {
	case cfg.JWTSecret != "":
		return []byte(cfg.JWTSecret), nil
	case cfg.JWTPublicKey != "":
		data, err := os.ReadFile(cfg.JWTPublicKey)
		if err != nil {
			return nil, fmt.Errorf("JWT_PUBLIC_KEY: %w", err)
		}
		block, _ := pem.Decode(data)
		if block == nil {
			return nil, fmt.Errorf("JWT_PUBLIC_KEY %s: no PEM block", cfg.JWTPublicKey)
		}
		key, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("JWT_PUBLIC_KEY %s: %w", cfg.JWTPublicKey, err)
		}
		return key, nil
	}
	return nil, nil
}

func (l *loader) handler() http.Handler {
	return httpapi.New(httpapi.Config{
		Auth:          authAdapter{l.api, l.unattended},
		Resources:     l.resources,
		Unlock:        l.unlock,
		Unattended:    l.unattended,
		ModelCacheDir: l.cfg.ModelCacheDir,
		APIToken:      l.cfg.APIToken,
		BodyTimeout:   l.cfg.RequestBodyTimeout,
		Logger:        l.log,
		Registry:      l.registry,
		Gatherer:      l.registry,
	})
}

// cacheFigures are GET /cache's figures for /metrics.
func (l *loader) cacheFigures() (metrics.CacheFigures, error) {
	st, err := l.resources.CacheStatus()
	if err != nil {
		return metrics.CacheFigures{}, err
	}
	f := metrics.CacheFigures{Bytes: st.Bytes, Max: st.Max, Parts: make(map[string]int),
		States: []string{string(cache.StateCached), string(cache.StateDownloading), string(cache.StatePartial), string(cache.StateQueued)}}
	for _, p := range st.Parts {
		f.Parts[string(p.State)]++
	}
	return f, nil
}

// start begins what only a serving process runs: the model cache's lock and sweep, prefetch.
func (l *loader) start() error {
	if err := l.resources.Start(); err != nil {
		return fmt.Errorf("model cache %s: %w", l.cfg.ModelCacheDir, err)
	}
	return nil
}

// maxConnections is MAX_CONNECTIONS, or else a bound sized from the open-file limit (which Go
// raised to its hard limit at start).
func maxConnections(configured int, log *slog.Logger) int {
	if configured > 0 {
		return configured
	}
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		log.Warn("cannot read the open-file limit; assuming 1024", "err", err)
		rl.Cur = 1024
	}
	n := httpapi.MaxConnsForFDLimit(rl.Cur)
	log.Info("connection bound", "maxConnections", n, "openFileLimit", rl.Cur)
	return n
}

func (l *loader) Close() {
	l.unattended.Wait()
	l.resources.Close() // stops prefetch and the downloads nobody waits for any more
	l.unlock.Close()
	l.docker.Close()
	l.logCloser.Close()
}

// authAdapter shows the Resource API client's session the way the HTTP API reports it, and
// tells the unattended work about an operator's login, which takes precedence over its own.
type authAdapter struct {
	c *resourceapi.Client
	u *unattended.Runner
}

func (a authAdapter) Login(ctx context.Context, email, password string) error {
	if err := a.c.Login(ctx, email, password); err != nil {
		return err
	}
	a.u.LoggedIn()
	return nil
}

// sessionAuth is the Resource API session as the unattended work sees it.
type sessionAuth struct{ c *resourceapi.Client }

func (a sessionAuth) Login(ctx context.Context, email, password string) error {
	return a.c.Login(ctx, email, password)
}

func (a sessionAuth) LoggedIn() bool {
	_, ok := a.c.Session()
	return ok
}

func (a authAdapter) Session() (httpapi.Session, bool) {
	u, ok := a.c.Session()
	if !ok {
		return httpapi.Session{}, false
	}
	return httpapi.Session{UserID: u.ID, Role: u.Role.String()}, true
}

func runServe(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve", "serve [--dev] [flags]", stdout)
	cl := config.Register(fs.FlagSet, getenv)
	dev := fs.Bool("dev", false, "run with an in-process reference Resource API and S3 server on loopback, a demo user and a demo model (for trying the loader out)")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := cl.Load()
	if err != nil {
		return usageError{err}
	}
	identity, err := loadIdentity(ctx, cfg)
	if err != nil {
		return err
	}
	var devEnv *devEnvironment
	if *dev {
		if devEnv, err = startDev(ctx, &cfg); err != nil {
			return fmt.Errorf("dev mode: %w", err)
		}
		defer devEnv.Close()
	}
	l, err := newLoader(cfg, stderr, "/")
	if err != nil {
		return err
	}
	defer l.Close()
	if err := l.start(); err != nil {
		return err
	}
	l.setIdentity(identity)
	if identity != nil {
		l.log.Info("device identity loaded", "file", cfg.DeviceConfig)
	}

	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if devEnv != nil {
		if err := devEnv.seed(ctx, l); err != nil {
			ln.Close()
			return fmt.Errorf("dev mode: %w", err)
		}
		devEnv.printTryOut(stdout, ln.Addr().String())
	}
	return serveHTTP(ctx, ln, l.handler(), l)
}

// serveHTTP starts the unattended work and serves until ctx is cancelled. Then, in this order:
// the unattended work stops at once (ctx is its context too: a waiting retry ends), in-flight
// requests finish within shutdownGrace (an unlock they start or ask about is still there to
// answer them), the unattended work's goroutine is waited for, and a running unlock is
// cancelled ("error: interrupted").
func serveHTTP(ctx context.Context, ln net.Listener, h http.Handler, l *loader) error {
	lim := httpapi.NewConnLimiter(maxConnections(l.cfg.MaxConnections, l.log), l.log, l.registry)
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ConnState:         lim.ConnState,   // slow and idle clients cannot use up the
		ConnContext:       lim.ConnContext, // file descriptors: see httpapi.ConnLimiter
		ErrorLog:          slog.NewLogLogger(l.log.Handler(), slog.LevelWarn),
	}
	ln = lim.Listener(ln)
	l.log.Info("listening", "addr", ln.Addr().String(), "version", version, "resourceAPI", l.cfg.ResourceAPIURL)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	workCtx, stopWork := context.WithCancel(ctx)
	defer stopWork()
	l.unattended.Start(workCtx)
	select {
	case err := <-errc:
		stopWork()
		l.unattended.Wait()
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	l.log.Info("shutting down", "grace", shutdownGrace.String())
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
		l.log.Warn("in-flight requests cut at the end of the grace period", "err", err)
	}
	l.unattended.Wait()
	l.unlock.Close() // a running unlock ends as "error: interrupted"
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	l.log.Info("stopped")
	return nil
}
