package pipeline

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/ptproxy/ptproxy/httpio"
)

// EndpointField is the HTTP/3 request field in which the client names the
// server endpoint a request is for (docs/routes.md). Absent means the
// default endpoint "". It is ptproxy's own: the server removes it before
// the request goes anywhere, and it never reaches an origin.
const EndpointField = "ptproxy-endpoint"

// ErrConflictingEndpoints is TakeEndpoint's error when a request names two
// different endpoints.
var ErrConflictingEndpoints = errors.New("conflicting " + EndpointField + " fields")

// TakeEndpoint removes every EndpointField field from h.Header and returns
// the endpoint they name ("" when there is none). Repeats of one value are
// accepted (a proxy on the way may have copied it); two different values
// are an ErrConflictingEndpoints (answered 400), and the fields are removed
// all the same.
func TakeEndpoint(h *Head) (string, error) {
	name, found := "", false
	var err error
	for v := range h.Header.Values(EndpointField) {
		v = strings.TrimSpace(v)
		switch {
		case !found:
			name, found = v, true
		case v != name && err == nil:
			err = fmt.Errorf("%w: %q and %q", ErrConflictingEndpoints, name, v)
		}
	}
	if found {
		h.Header = h.Header.Del(EndpointField)
	}
	if err != nil {
		return "", err
	}
	return name, nil
}

// Endpoint is one endpoint of the server: where its requests go and who
// may send them.
type Endpoint struct {
	// Name is what the client sends in EndpointField; "" is the default
	// endpoint.
	Name  string
	Group *OriginGroup
	// Allow lists the access rules; a request passes when any matches.
	// No rules allow everything.
	Allow []AccessRule

	requests atomic.Uint64 // requests routed here (allowed or not)
}

// Requests is the number of requests that named this endpoint.
func (e *Endpoint) Requests() uint64 { return e.requests.Load() }

// AccessRule is one allow rule. Each list, when not empty, must match:
// the client identity is one of Identities, the method one of Methods
// (case-sensitive, RFC 9110 9.1), the path starts with one of
// PathPrefixes.
type AccessRule struct {
	Identities   []string
	Methods      []string
	PathPrefixes []string
}

// matches reports whether the rule lets identity send method on path.
func (r *AccessRule) matches(identity, method, path string) bool {
	if len(r.Identities) > 0 && !slices.Contains(r.Identities, identity) {
		return false
	}
	if len(r.Methods) > 0 && !slices.Contains(r.Methods, method) {
		return false
	}
	if len(r.PathPrefixes) > 0 && !slices.ContainsFunc(r.PathPrefixes, func(p string) bool { return strings.HasPrefix(path, p) }) {
		return false
	}
	return true
}

// Allows reports whether the endpoint's rules let identity send method
// on path.
func (e *Endpoint) Allows(identity, method, path string) bool {
	if len(e.Allow) == 0 {
		return true
	}
	for i := range e.Allow {
		if e.Allow[i].matches(identity, method, path) {
			return true
		}
	}
	return false
}

// displayName names an endpoint in logs and response bodies.
func (e *Endpoint) displayName() string {
	if e.Name == "" {
		return "the default endpoint"
	}
	return "endpoint " + strconv.Quote(e.Name)
}

// route picks the endpoint of h, taking EndpointField out of it, and
// checks its access rules. A refusal is the *Error to answer with.
func (hd *handlerState) route(h *Head, identity string) (*Endpoint, *Error) {
	name, err := TakeEndpoint(h)
	if err != nil {
		e := NewError(KindBadRequest, ServerSide, MsgBadRequest, err)
		e.Public = "conflicting " + EndpointField + " fields"
		return nil, e
	}
	ep := hd.endpoints[name]
	if ep == nil {
		if l := hd.o.Logger; l != nil {
			l.Warn("request for an unknown endpoint refused", "endpoint", name, "identity", identity, "method", h.Method, "path", h.Path)
		}
		e := NewError(KindNotFound, ServerSide, MsgUnknownEndpoint, fmt.Errorf("no endpoint %q", name))
		e.Public = strconv.Quote(name)
		return nil, e
	}
	ep.requests.Add(1)
	if !ep.Allows(identity, h.Method, h.Path) {
		if l := hd.o.Logger; l != nil {
			l.Warn("request refused by the endpoint's access rules: no rule matched",
				"endpoint", ep.Name, "identity", identity, "method", h.Method, "path", h.Path)
		}
		e := NewError(KindForbidden, ServerSide, MsgForbidden, fmt.Errorf("%s: no rule matched %s %s from %q", ep.displayName(), h.Method, h.Path, identity))
		e.Public = "forbidden by " + ep.displayName() + "'s access rules"
		return nil, e
	}
	return ep, nil
}

// headerValue is the value a request carries for a sticky key: the
// field's first value, or the cookie's.
func stickyValue(h httpio.Header, kind, name string) string {
	if kind == "header" {
		return h.Get(name)
	}
	for line := range h.Values("Cookie") {
		cs, err := http.ParseCookie(line)
		if err != nil {
			// One bad pair spoils the line for ParseCookie: look for the
			// name by hand.
			for part := range strings.SplitSeq(line, ";") {
				if n, v, ok := strings.Cut(strings.TrimSpace(part), "="); ok && n == name {
					return v
				}
			}
			continue
		}
		for _, c := range cs {
			if c.Name == name {
				return c.Value
			}
		}
	}
	return ""
}
