// Command azaion-refapi runs the reference Azaion Resource API (internal/refapi) on its own,
// for a local try-out of the loader and for tests that run the loader as a process.
//
// Every flag falls back to an environment variable (shown in --help). Prefer the environment
// for secrets: command lines are visible to every user of the machine.
//
// Resources are plaintext files under --data, as DataDir/<folder>/<fileName>; they are
// encrypted per request with the caller's API key. Without --users there is one demo user,
// demo@azaion.local / demo-password, role Admin, bound to the first hardware that asks.
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/azaion/loader/internal/refapi"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "azaion-refapi:", err)
		os.Exit(1)
	}
}

// The demo account used when no users file is given.
const (
	demoEmail    = "demo@azaion.local"
	demoPassword = "demo-password"
)

// shutdownTimeout bounds how long in-flight requests (a big download) may finish after a
// signal before the server closes them.
const shutdownTimeout = 10 * time.Second

// run serves the reference API until ctx is done. It prints one line to stdout,
// "azaion-refapi listening on http://ADDR", once the port is open, so a caller that asked for
// port 0 learns the real one; logs go to stderr.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("azaion-refapi", flag.ContinueOnError)
	fs.SetOutput(stderr)
	str := func(name, env, def, usage string) *string {
		v := def
		if e := getenv(env); e != "" {
			v = e
		}
		return fs.String(name, v, usage+" (env "+env+")")
	}
	var (
		listen       = str("listen", "AZAION_REFAPI_LISTEN", "127.0.0.1:8090", "address to listen on")
		usersFile    = str("users", "AZAION_REFAPI_USERS", "", "YAML file with the list of users (default: one demo user "+demoEmail+" / "+demoPassword+", role Admin)")
		dataDir      = str("data", "AZAION_REFAPI_DATA", "refapi-data", "directory of the plaintext resources, DIR/<folder>/<file>")
		jwtSecret    = str("jwt-secret", "AZAION_REFAPI_JWT_SECRET", "", "HS256 secret for tokens (default: random per run)")
		lifetime     = str("token-lifetime", "AZAION_REFAPI_TOKEN_LIFETIME", refapi.DefaultTokenLifetime.String(), "token lifetime")
		fragmentFile = str("key-fragment-file", "AZAION_REFAPI_KEY_FRAGMENT_FILE", "", "file whose raw bytes are the archive key fragment (default: random per run)")
		maxUpload    = str("max-upload", "AZAION_REFAPI_MAX_UPLOAD", strconv.FormatInt(refapi.DefaultMaxUpload, 10), "largest accepted upload, bytes")
		logLevel     = str("log-level", "AZAION_REFAPI_LOG_LEVEL", "info", "debug, info, warn or error")
	)
	cdnHost := str("cdn-host", "AZAION_REFAPI_CDN_HOST", "", "cdn.yaml host: the S3 endpoint URL")
	cdnDownKey := str("cdn-downloader-key", "AZAION_REFAPI_CDN_DOWNLOADER_KEY", "", "cdn.yaml downloader_access_key")
	cdnDownSecret := str("cdn-downloader-secret", "AZAION_REFAPI_CDN_DOWNLOADER_SECRET", "", "cdn.yaml downloader_access_secret")
	cdnUpKey := str("cdn-uploader-key", "AZAION_REFAPI_CDN_UPLOADER_KEY", "", "cdn.yaml uploader_access_key")
	cdnUpSecret := str("cdn-uploader-secret", "AZAION_REFAPI_CDN_UPLOADER_SECRET", "", "cdn.yaml uploader_access_secret")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	cdn := refapi.CDNSettings{
		Host:                   *cdnHost,
		DownloaderAccessKey:    *cdnDownKey,
		DownloaderAccessSecret: *cdnDownSecret,
		UploaderAccessKey:      *cdnUpKey,
		UploaderAccessSecret:   *cdnUpSecret,
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	tokenLifetime, err := time.ParseDuration(*lifetime)
	if err != nil || tokenLifetime <= 0 {
		return fmt.Errorf("--token-lifetime %q: want a positive duration such as 4h", *lifetime)
	}
	maxBytes, err := strconv.ParseInt(*maxUpload, 10, 64)
	if err != nil || maxBytes <= 0 {
		return fmt.Errorf("--max-upload %q: want a positive number of bytes", *maxUpload)
	}

	users := []refapi.User{{Email: demoEmail, Password: demoPassword, Role: "Admin"}}
	if *usersFile != "" {
		if users, err = refapi.LoadUsers(*usersFile); err != nil {
			return err
		}
	} else {
		log.Warn("no --users file: serving the demo user", "email", demoEmail)
	}
	var fragment []byte
	if *fragmentFile != "" {
		if fragment, err = os.ReadFile(*fragmentFile); err != nil {
			return fmt.Errorf("--key-fragment-file: %w", err)
		}
	} else {
		// Random, so that no archive anyone built can be unlocked by accident with a
		// well-known fragment.
		fragment = make([]byte, 32)
		rand.Read(fragment)
		log.Warn("no --key-fragment-file: serving a random key fragment, no archive will decrypt with it")
	}
	if *jwtSecret == "" {
		log.Info("no --jwt-secret: tokens are signed with a random secret")
	}

	srv, err := refapi.New(refapi.Config{
		Users:         users,
		DataDir:       *dataDir,
		JWTSecret:     []byte(*jwtSecret),
		TokenLifetime: tokenLifetime,
		KeyFragment:   fragment,
		CDN:           cdn,
		Logger:        log,
		MaxUpload:     maxBytes,
	})
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	hs := &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: 10 * time.Second, // no timeout on bodies: uploads may be large and slow
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	fmt.Fprintf(stdout, "azaion-refapi listening on http://%s\n", ln.Addr())
	log.Info("serving", "addr", ln.Addr().String(), "data", *dataDir, "users", len(users))

	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		hs.Close()
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
