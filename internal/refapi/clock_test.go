package refapi_test

import (
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/azaion/loader/internal/refapi"
)

// TestClock: Config.Now is the clock tokens are issued and checked by, so a test moves a
// token to its expiry instead of sleeping until it.
func TestClock(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2031, 5, 1, 8, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	e := newEnv(t, func(c *refapi.Config) { c.Now = clock })
	token := e.login(t, opEmail, opPassword)

	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(token, claims); err != nil {
		t.Fatal(err)
	}
	iat, _ := claims.GetIssuedAt()
	exp, _ := claims.GetExpirationTime()
	if !iat.Equal(clock()) || !exp.Equal(clock().Add(refapi.DefaultTokenLifetime)) {
		t.Fatalf("iat %v exp %v, want the injected clock %v and 4 h later", iat, exp, clock())
	}
	if r := e.do(t, "GET", "/binary-split/key-fragment", token, "", nil); r.status != 200 {
		t.Fatalf("fresh token: %d %s", r.status, r.body)
	}
	advance(refapi.DefaultTokenLifetime - time.Second)
	if r := e.do(t, "GET", "/binary-split/key-fragment", token, "", nil); r.status != 200 {
		t.Fatalf("a second before expiry: %d %s", r.status, r.body)
	}
	advance(2 * time.Second)
	if r := e.do(t, "GET", "/binary-split/key-fragment", token, "", nil); r.status != 401 {
		t.Fatalf("a second after expiry: %d %s, want 401", r.status, r.body)
	}
}
