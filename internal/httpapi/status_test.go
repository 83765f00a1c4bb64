package httpapi_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3filter"

	"github.com/azaion/loader/internal/httpapi"
	"github.com/azaion/loader/internal/unattended"
)

// unattendedOff is the block of GET /status for a loader without a device identity.
const unattendedOff = `"unattended":{"state":"off","attempts":0,"nextAttemptAt":null,"lastError":null}`

type fakeUnattended struct {
	mu sync.Mutex
	st unattended.Status
}

func (f *fakeUnattended) Status() unattended.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st
}

func (f *fakeUnattended) set(st unattended.Status) {
	f.mu.Lock()
	f.st = st
	f.mu.Unlock()
}

// The unattended block of SPEC §10, in every state, as the OpenAPI document describes it.
func TestStatusUnattended(t *testing.T) {
	u := &fakeUnattended{}
	e := newEnv(t, func(c *httpapi.Config) { c.Unattended = u })
	_, router := openAPIRouter(t)
	next := time.Date(2026, 3, 1, 12, 0, 5, 250e6, time.FixedZone("CET", 3600))
	for _, c := range []struct {
		st   unattended.Status
		want string
	}{
		{unattended.Status{State: unattended.StateOff}, unattendedOff},
		{unattended.Status{State: unattended.StateWorking, Attempts: 1},
			`"unattended":{"state":"working","attempts":1,"nextAttemptAt":null,"lastError":null}`},
		{unattended.Status{State: unattended.StateWaiting, Attempts: 3, NextAttemptAt: next, LastError: "login: resource API unreachable or broken (503 Service Unavailable)"},
			`"unattended":{"state":"waiting","attempts":3,"nextAttemptAt":"2026-03-01T11:00:05.250Z","lastError":"login: resource API unreachable or broken (503 Service Unavailable)"}`},
		{unattended.Status{State: unattended.StateFailed, Attempts: 1, LastError: "login: resource API rejected the credentials (401 Unauthorized)"},
			`"unattended":{"state":"failed","attempts":1,"nextAttemptAt":null,"lastError":"login: resource API rejected the credentials (401 Unauthorized)"}`},
		{unattended.Status{State: unattended.StateDone, Attempts: 2},
			`"unattended":{"state":"done","attempts":2,"nextAttemptAt":null,"lastError":null}`},
	} {
		u.set(c.st)
		a := e.do(t, "GET", "/status", "", nil)
		wantJSON(t, a, 200, `{"status":"healthy","authenticated":false,"modelCacheDir":"/var/cache/models",`+c.want+`}`)
		req, _ := http.NewRequest("GET", "/status", nil)
		route, params, err := router.FindRoute(req)
		if err != nil {
			t.Fatal(err)
		}
		in := &openapi3filter.ResponseValidationInput{
			RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route},
			Status:                 a.status,
			Header:                 a.header,
			Body:                   io.NopCloser(bytes.NewReader(a.body)),
		}
		if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
			t.Errorf("GET /status with the work %s is not as documented: %v", c.st.State, err)
		}
	}
}
