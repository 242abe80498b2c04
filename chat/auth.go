package chat

import (
	"context"
	"unicode"
	"unicode/utf8"

	"github.com/chatd/chatd/stompws"
)

// MaxUserIDLen bounds user ids.
const MaxUserIDLen = 128

// DevAuthenticator is dev mode's authentication: the CONNECT login header
// is the user id, with no password. Never use it where users are untrusted.
type DevAuthenticator struct{}

// Authenticate implements Authenticator.
func (DevAuthenticator) Authenticate(_ context.Context, req *stompws.ConnectRequest) (stompws.Principal, error) {
	login := req.Frame.Value("login")
	if login == "" {
		return stompws.Principal{}, stompws.Errorf("login header required (dev mode: login is the user id)")
	}
	if !ValidUserID(login) {
		return stompws.Principal{}, stompws.Errorf("invalid login: 1 to %d printable characters, no spaces", MaxUserIDLen)
	}
	return stompws.Principal{User: login}, nil
}

// Verify takes an HTTP API bearer token: in dev mode it is the user id.
func (DevAuthenticator) Verify(token string) (stompws.Principal, error) {
	if !ValidUserID(token) {
		return stompws.Principal{}, stompws.Errorf("invalid user id")
	}
	return stompws.Principal{User: token}, nil
}

// ValidUserID reports whether id can be a user id: 1 to 128 bytes of
// printable, non-space UTF-8.
func ValidUserID(id string) bool {
	if id == "" || len(id) > MaxUserIDLen || !utf8.ValidString(id) {
		return false
	}
	for _, r := range id {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return false
		}
	}
	return true
}
