// Package resourceapi is the client of the upstream Azaion Resource API (SPEC §3): it logs in,
// keeps the token fresh, fetches the CDN settings and downloads and uploads resources.
//
// The client holds the credentials in memory so that it can log in again on its own: before
// the token expires, and once whenever the API answers 401 or 403. Nothing secret (password,
// token, API key, hardware fingerprint, CDN keys) ever appears in an error or a log line.
package resourceapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/azaion/loader/internal/security"
)

// User is who the token says is logged in.
type User struct {
	ID    string
	Email string
	Role  Role
}

// CDNSettings are the S3 CDN endpoint and key pairs from the API's cdn.yaml.
type CDNSettings struct {
	Host                   string `yaml:"host"`
	DownloaderAccessKey    string `yaml:"downloader_access_key"`
	DownloaderAccessSecret string `yaml:"downloader_access_secret"`
	UploaderAccessKey      string `yaml:"uploader_access_key"`
	UploaderAccessSecret   string `yaml:"uploader_access_secret"`
}

// Defaults for the zero values in Options.
const (
	DefaultConnectTimeout = 10 * time.Second
	DefaultHeaderTimeout  = 30 * time.Second
	DefaultRenewBefore    = time.Minute
)

// Options configure a Client. The zero value is usable.
type Options struct {
	// HTTPClient sends the requests. If nil, the client uses one whose transport limits the
	// connect (ConnectTimeout) and the wait for response headers (HeaderTimeout). It sets no
	// Client.Timeout on purpose: that would also cut a long but healthy body.
	HTTPClient *http.Client
	// ConnectTimeout bounds dialing and the TLS handshake; default DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// HeaderTimeout bounds the wait for response headers and also any pause between body
	// bytes, so a stalled answer fails instead of hanging; default DefaultHeaderTimeout.
	HeaderTimeout time.Duration
	// Logger receives the client's log lines; nil discards them.
	Logger *slog.Logger
	// VerifyKey, if set, is the key that token signatures must verify with: a []byte HMAC
	// secret, an *rsa.PublicKey, an *ecdsa.PublicKey or an ed25519.PublicKey; a verified token
	// must also carry the issuer "AzaionApi". If nil, claims are read without verification,
	// as the seed did (the token arrives over TLS from the API).
	VerifyKey any
	// RenewBefore is how long before the token expires the client logs in again; default
	// DefaultRenewBefore (never more than half the token's lifetime).
	RenewBefore time.Duration
	// Now returns the current time; nil means time.Now. Tests inject a clock here.
	Now func() time.Time
	// Observer is told about every call and re-login, for metrics; nil means none.
	Observer Observer
	// OnLogin, when not nil, is called after each successful Login (not after the client's
	// own re-logins), e.g. to start prefetching models (SPEC §11). It must not block.
	OnLogin func()
}

// Observer is told what the client does upstream.
type Observer interface {
	// UpstreamCall reports one HTTP exchange: endpoint is e.g. "login", "resources/get";
	// outcome is "ok", the status code of a failed answer, or "unreachable".
	UpstreamCall(endpoint, outcome string)
	// Relogin reports a login the client made by itself (token expiry, 401/403).
	Relogin()
}

type nopObserver struct{}

func (nopObserver) UpstreamCall(string, string) {}
func (nopObserver) Relogin()                    {}

// Client talks to one Resource API on behalf of one device. It is safe for concurrent use.
//
// Every call except Login needs a session: before the first successful Login it returns
// ErrNotLoggedIn without contacting the API. A call answered 401 or 403 logs in again once
// (concurrent callers share that login) and is repeated once; if the repeat is refused too, the
// call returns ErrUnauthorized or ErrForbidden. 404 is ErrNotFound. No answer, a 5xx, another
// unexpected status or an unusable body is ErrUnavailable, wrapping the cause (and ctx.Err()
// when ctx ended). Errors name the call, e.g. "get models/a.small: ...".
type Client struct {
	base          string // without a trailing slash
	hardware      string
	hardwareHash  string
	http          *http.Client
	headerTimeout time.Duration
	renewTimeout  time.Duration
	renewBefore   time.Duration
	verifier      verifier
	log           *slog.Logger
	now           func() time.Time
	obs           Observer
	onLogin       func()

	mu     sync.Mutex
	sess   *session     // nil until a Login succeeds; replaced, never modified
	flight *renewal     // the re-login in progress, if any
	logins *loginFlight // the login (Login or re-login) talking to the API, if any
}

// New returns a client of the API at baseURL (for example "https://api.azaion.com") for the
// device with the given hardware fingerprint string (SPEC §4).
func New(baseURL, hardware string, opts Options) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("resourceapi: base URL %q is not an http(s) URL", baseURL)
	}
	if hardware == "" {
		return nil, errors.New("resourceapi: empty hardware fingerprint")
	}
	v, err := newVerifier(opts.VerifyKey)
	if err != nil {
		return nil, err
	}
	connect := orDefault(opts.ConnectTimeout, DefaultConnectTimeout)
	header := orDefault(opts.HeaderTimeout, DefaultHeaderTimeout)
	c := &Client{
		base:          strings.TrimRight(baseURL, "/"),
		hardware:      hardware,
		hardwareHash:  security.HardwareHash(hardware),
		http:          opts.HTTPClient,
		headerTimeout: header,
		// A re-login is one small exchange; this bounds it when it runs detached from the
		// caller that started it.
		renewTimeout: 2 * (connect + header),
		renewBefore:  orDefault(opts.RenewBefore, DefaultRenewBefore),
		verifier:     v,
		log:          opts.Logger,
		now:          opts.Now,
		obs:          opts.Observer,
		onLogin:      opts.OnLogin,
	}
	if c.obs == nil {
		c.obs = nopObserver{}
	}
	if c.http == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.DialContext = (&net.Dialer{Timeout: connect, KeepAlive: 30 * time.Second}).DialContext
		t.TLSHandshakeTimeout = connect
		t.ResponseHeaderTimeout = header
		c.http = &http.Client{Transport: t}
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c, nil
}

// orDefault returns d, or def if d is not positive.
func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// Session returns the logged-in user; ok is false before the first successful Login.
func (c *Client) Session() (user User, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess == nil {
		return User{}, false
	}
	return c.sess.user, true
}

// CDN returns the CDN settings fetched at login, or ErrNotLoggedIn.
func (c *Client) CDN() (CDNSettings, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess == nil {
		return CDNSettings{}, ErrNotLoggedIn
	}
	return c.sess.cdn, nil
}

// secrets lists what must not leak through an upstream error text while s is in use; the
// email is one (SPEC §7).
func (c *Client) secrets(s *session) []string {
	return []string{s.email, s.password, s.token, security.APIKey(s.email, s.password, c.hardwareHash),
		c.hardware, c.hardwareHash, s.cdn.DownloaderAccessKey, s.cdn.DownloaderAccessSecret,
		s.cdn.UploaderAccessKey, s.cdn.UploaderAccessSecret}
}

// call sends r with the active session. On 401 or 403 it logs in again once and repeats r
// once. It returns the 2xx answer and the session that got it.
func (c *Client) call(ctx context.Context, r *request) (answer, *session, error) {
	s, err := c.active(ctx)
	if err != nil {
		return answer{}, nil, fmt.Errorf("%s: %w", r.op, err)
	}
	a, err := c.exchange(ctx, s, r)
	if err == nil && (a.status == http.StatusUnauthorized || a.status == http.StatusForbidden) {
		s, err = c.renew(ctx, s, fmt.Sprintf("%s answered %d", r.op, a.status))
		if err == nil {
			a, err = c.exchange(ctx, s, r)
		}
	}
	if err == nil && a.status/100 != 2 {
		err = a.err(resourceSentinel(a.status), c.secrets(s))
	}
	if err != nil {
		return answer{}, nil, fmt.Errorf("%s: %w", r.op, err)
	}
	return a, s, nil
}

// resourceSentinel maps a failed status of an authenticated call to the error callers tell apart.
func resourceSentinel(status int) error {
	switch status {
	case http.StatusUnauthorized:
		return ErrUnauthorized
	case http.StatusForbidden:
		return ErrForbidden
	case http.StatusNotFound:
		return ErrNotFound
	}
	return ErrUnavailable
}
