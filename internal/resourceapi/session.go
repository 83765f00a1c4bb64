package resourceapi

// Logging in and keeping the session fresh: one login in flight at a time, the token renewed
// before it expires and after a 401 or 403, a failed login never losing a working session.

import (
	"context"
	"crypto/subtle"
	"fmt"
	"net/http"
	"time"

	"github.com/azaion/loader/internal/security"
)

// loginFlight is the one login in flight. The real API locks an account after repeated failed
// logins (SPEC §10), so the client never has two at once: Logins with the same credentials
// share one, any other login waits for it to end. The exchange it waits on is bounded by the
// connect and header timeouts.
type loginFlight struct {
	email, password string // empty for a re-login, which nobody joins
	done            chan struct{}
	err             error // set before done is closed
	abandoned       bool  // its caller gave up: the result says nothing about the credentials
}

// session is one logged-in state. It is immutable once published, so a caller can keep using
// the one it read while another goroutine replaces it.
type session struct {
	email, password string
	apiKey          []byte // AES key that resources sent to this user on this device are encrypted with
	token           string
	user            User
	expires         time.Time // on the local clock; zero if the token does not say
	renewAt         time.Time // zero: never renew ahead of time
	cdn             CDNSettings
}

// renewal is a re-login shared by every caller that found the same session stale.
type renewal struct {
	stale *session
	done  chan struct{}
	err   error
}

// Login logs in as email on this device: it gets a token, reads the user from it and fetches
// the CDN settings. Only when all of that succeeds does the client switch to the new session;
// a failed Login leaves the client exactly as it was, still logged in as before if it was, so
// a mistyped password or a network failure never logs a working device out.
//
// Errors: ErrUnauthorized if the API rejects the credentials; ErrForbidden if it refuses
// cdn.yaml to this user or device; ErrUnavailable if it is unreachable or answers something
// unusable (including a token that is not a valid JWT, or with
// Options.VerifyKey one that does not verify).
//
// Concurrent Logins never reach the API together: a Login with the credentials of one already
// in flight waits for it and shares its result (one refused password is one refusal upstream,
// not one per caller); any other waits until no login is in flight.
func (c *Client) Login(ctx context.Context, email, password string) error {
	if email == "" || password == "" {
		return fmt.Errorf("login: %w: empty email or password", ErrUnauthorized)
	}
	f, joined, err := c.enterLogin(ctx, email, password)
	if err != nil {
		return fmt.Errorf("login: %w", err)
	}
	if joined {
		return f.err
	}
	err = c.logIn(ctx, email, password)
	c.leaveLogin(f, err, err != nil && ctx.Err() != nil)
	return err
}

// logIn is one login: the token, then cdn.yaml; the session is switched only when both succeed.
func (c *Client) logIn(ctx context.Context, email, password string) error {
	s, err := c.authenticate(ctx, email, password)
	if err != nil {
		return fmt.Errorf("login: %w", err)
	}
	cdn, err := c.fetchCDN(ctx, s)
	if err != nil {
		return fmt.Errorf("login: %w", err)
	}
	s.cdn = cdn
	c.mu.Lock()
	c.sess = s
	c.mu.Unlock()
	c.log.Info("logged in to the resource API", "user", s.user.ID, "role", s.user.Role.String())
	if c.onLogin != nil {
		c.onLogin()
	}
	return nil
}

// enterLogin waits until no login is in flight and registers one, which the caller ends with
// leaveLogin. When a Login with the same credentials (email not empty) is in flight, it waits
// for that one instead and returns it, ended, with joined set. A flight whose caller gave up is
// never shared: the waiter then tries itself.
func (c *Client) enterLogin(ctx context.Context, email, password string) (f *loginFlight, joined bool, err error) {
	for {
		c.mu.Lock()
		cur := c.logins
		if cur == nil {
			f = &loginFlight{email: email, password: password, done: make(chan struct{})}
			c.logins = f
			c.mu.Unlock()
			return f, false, nil
		}
		c.mu.Unlock()
		select {
		case <-cur.done:
		case <-ctx.Done():
			return nil, false, fmt.Errorf("%w: waiting for another login: %w", ErrUnavailable, ctx.Err())
		}
		if email != "" && !cur.abandoned && cur.email == email &&
			subtle.ConstantTimeCompare([]byte(cur.password), []byte(password)) == 1 {
			return cur, true, nil
		}
	}
}

// leaveLogin ends the flight f with err and lets the next login go.
func (c *Client) leaveLogin(f *loginFlight, err error, abandoned bool) {
	c.mu.Lock()
	f.err, f.abandoned = err, abandoned
	if c.logins == f {
		c.logins = nil
	}
	c.mu.Unlock()
	close(f.done)
}

// authenticate posts the credentials to /login and returns a session without CDN settings.
func (c *Client) authenticate(ctx context.Context, email, password string) (*session, error) {
	pending := &session{email: email, password: password}
	a, err := c.exchange(ctx, pending, loginRequest(email, password))
	if err != nil {
		return nil, err
	}
	if a.status/100 != 2 {
		sentinel := ErrUnavailable
		// Any other 4xx means "not these credentials"; 408 and 429 only mean "not now".
		if a.status/100 == 4 && a.status != http.StatusRequestTimeout && a.status != http.StatusTooManyRequests {
			sentinel = ErrUnauthorized
		}
		return nil, a.err(sentinel, c.secrets(pending))
	}
	token, err := decodeToken(a.body)
	if err != nil {
		return nil, err
	}
	arrived := c.now()
	info, err := c.verifier.parse(token)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	s := &session{
		email:    email,
		password: password,
		apiKey:   security.KeyFromString(security.APIKey(email, password, c.hardwareHash)),
		token:    token,
		user:     info.user,
		expires:  info.expiresLocally(arrived),
	}
	switch {
	case s.expires.IsZero():
	case !s.expires.After(arrived):
		// Expired on arrival (a token without iat and a clock far ahead): that says more about
		// this clock than about the token. Renewing would fetch the same and loop on every
		// call, so rely on the API's 401 instead.
		s.expires = time.Time{}
	default:
		// Renew ahead, but never so early that a short-lived token is renewed on every call.
		s.renewAt = s.expires.Add(-min(c.renewBefore, s.expires.Sub(arrived)/2))
	}
	return s, nil
}

// withToken returns a copy of s that uses the token and user of fresh.
func (s *session) withToken(fresh *session) *session {
	n := *s
	n.token, n.user, n.expires, n.renewAt = fresh.token, fresh.user, fresh.expires, fresh.renewAt
	return &n
}

// active returns the session to send a call with, renewing it first if its token is about to
// expire. If that renewal fails while the token is still valid, the call goes ahead with it:
// a login hiccup a minute before expiry must not fail work the current token can still do.
func (c *Client) active(ctx context.Context) (*session, error) {
	c.mu.Lock()
	s := c.sess
	c.mu.Unlock()
	if s == nil {
		return nil, ErrNotLoggedIn
	}
	if s.renewAt.IsZero() || c.now().Before(s.renewAt) {
		return s, nil
	}
	fresh, err := c.renew(ctx, s, "token expires soon")
	if err != nil {
		if ctx.Err() == nil && c.now().Before(s.expires) {
			c.log.Warn("renewing the resource API token failed; using the current one until it expires", "err", err)
			return s, nil
		}
		return nil, err
	}
	return fresh, nil
}

// renew logs in again with the credentials of stale and returns the resulting session.
// Concurrent callers holding the same stale session share one login; a caller whose session
// was already replaced gets the replacement without another login. The login runs detached
// from ctx, so one caller giving up does not fail the others waiting on it.
func (c *Client) renew(ctx context.Context, stale *session, reason string) (*session, error) {
	c.mu.Lock()
	if c.sess == nil {
		c.mu.Unlock()
		return nil, ErrNotLoggedIn
	}
	if c.sess != stale {
		s := c.sess
		c.mu.Unlock()
		return s, nil
	}
	f := c.flight
	if f == nil || f.stale != stale {
		f = &renewal{stale: stale, done: make(chan struct{})}
		c.flight = f
		go c.runRenewal(context.WithoutCancel(ctx), f, reason)
	}
	c.mu.Unlock()

	select {
	case <-f.done:
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
	}
	if f.err != nil {
		return nil, f.err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess == nil {
		return nil, ErrNotLoggedIn
	}
	return c.sess, nil
}

func (c *Client) runRenewal(ctx context.Context, f *renewal, reason string) {
	ctx, cancel := context.WithTimeout(ctx, c.renewTimeout)
	defer cancel()
	var fresh *session
	lf, _, err := c.enterLogin(ctx, "", "")
	if err == nil {
		c.mu.Lock()
		replaced := c.sess != f.stale // by the Login this one waited for: nothing to renew
		c.mu.Unlock()
		if !replaced {
			c.log.Info("logging in to the resource API again", "user", f.stale.user.ID, "reason", reason)
			c.obs.Relogin()
			fresh, err = c.authenticate(ctx, f.stale.email, f.stale.password)
		}
		c.leaveLogin(lf, err, false)
	}
	if err != nil {
		err = fmt.Errorf("log in again: %w", err)
		c.log.Warn("logging in to the resource API again failed", "user", f.stale.user.ID, "err", err)
	}
	c.mu.Lock()
	// A Login with other credentials may have replaced the session meanwhile; it wins.
	if err == nil && fresh != nil && c.sess == f.stale {
		c.sess = f.stale.withToken(fresh)
	}
	if c.flight == f {
		c.flight = nil
	}
	f.err = err
	c.mu.Unlock()
	close(f.done)
}
