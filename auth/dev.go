package auth

import (
	"context"
	"errors"

	"github.com/chatd/chatd/stompws"
)

// Dev is dev mode's authentication: the CONNECT login header, or an HTTP
// API bearer token, is the user id, with no password. Never use it where
// users are untrusted.
type Dev struct {
	// ValidUser must accept the user id; Rule says what it accepts, for
	// the client.
	ValidUser func(string) bool
	Rule      string
}

// Authenticate takes the CONNECT frame's login header as the user id.
func (d Dev) Authenticate(_ context.Context, req *stompws.ConnectRequest) (stompws.Principal, error) {
	login := req.Frame.Value("login")
	if login == "" {
		return stompws.Principal{}, stompws.Errorf(stompws.KindConnect, "login header required (dev mode: login is the user id)")
	}
	if !d.ValidUser(login) {
		return stompws.Principal{}, stompws.Errorf(stompws.KindConnect, "invalid login: %s", d.Rule)
	}
	return stompws.Principal{User: login}, nil
}

// Verify takes an HTTP API bearer token as the user id.
func (d Dev) Verify(_ context.Context, token string) (Identity, error) {
	if !d.ValidUser(token) {
		return Identity{}, errors.New("invalid user id")
	}
	return Identity{User: token}, nil
}
