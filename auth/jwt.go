// Package auth authenticates STOMP-over-WebSocket sessions and HTTP API
// requests: with JSON Web Tokens (JWT), or in dev mode by trusting the
// login the client gives (Dev). It knows nothing of chat: it maps a
// WebSocket handshake and a CONNECT frame to a stompws.Principal, and a
// bearer token to an Identity.
package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/chatd/chatd/stompws"
	"github.com/golang-jwt/jwt/v5"
)

// DefaultLeeway is the clock skew allowed on exp and nbf.
const DefaultLeeway = 30 * time.Second

// MinSecretLen is the shortest HS256 secret accepted (RFC 7518 §3.2: a key
// at least as long as the hash).
const MinSecretLen = 32

// Config says which tokens a JWT accepts.
type Config struct {
	// Secret verifies HS256 tokens; empty: HS256 is refused.
	Secret []byte
	// PublicKeyPEM verifies RS256 (an RSA key) or ES256 (a P-256 key)
	// tokens: a PEM "PUBLIC KEY" (PKIX) or "RSA PUBLIC KEY" (PKCS #1) block.
	PublicKeyPEM []byte
	// JWKS is a JSON Web Key Set whose RSA (RS256) and EC P-256 (ES256)
	// keys verify tokens that name them in the kid header.
	JWKS []byte
	// JWKSURL serves a JSON Web Key Set used as JWKS is, after it: fetched
	// by New, again every JWKSRefresh (default DefaultJWKSRefresh) and
	// when a token names a kid it lacks, at most once per
	// JWKSRefreshUnknown (default DefaultJWKSRefreshUnknown). When a fetch
	// fails the keys fetched last stay in use.
	JWKSURL            string
	JWKSRefresh        time.Duration
	JWKSRefreshUnknown time.Duration
	// Issuer and Audience, when set, must match iss and be one of aud.
	Issuer   string
	Audience string
	// UserClaim names the claim holding the user id (default "sub").
	UserClaim string
	// Cookie names a handshake cookie that may carry the token; empty: none.
	Cookie string
	// ConnectHeader names the CONNECT frame header that carries the token,
	// "Bearer <token>" or the token alone (default "Authorization"), for
	// apps whose ChannelInterceptor reads a header of their own.
	ConnectHeader string
	// Leeway is the clock skew allowed on exp and nbf (default DefaultLeeway).
	Leeway time.Duration
	// ValidUser, when set, must accept the user id.
	ValidUser func(string) bool
	Logger    *slog.Logger
}

// Identity is who a verified token names.
type Identity struct {
	User string
	// Expires is when the token stops being good (zero: never).
	Expires time.Time
}

// JWT authenticates sessions by a signed token.
type JWT struct {
	cfg    Config
	parser *jwt.Parser
	rsa    *rsa.PublicKey
	ec     *ecdsa.PublicKey
	jwks   *keySet // nil without JWKS or JWKSURL
	log    *slog.Logger
}

// New checks cfg, fetches cfg.JWKSURL if set (ctx bounds that fetch), and
// returns a JWT authenticator; Close stops its refreshes.
func New(ctx context.Context, cfg Config) (*JWT, error) {
	if cfg.UserClaim == "" {
		cfg.UserClaim = "sub"
	}
	if cfg.Leeway <= 0 {
		cfg.Leeway = DefaultLeeway
	}
	if cfg.JWKSRefresh <= 0 {
		cfg.JWKSRefresh = DefaultJWKSRefresh
	}
	if cfg.JWKSRefreshUnknown <= 0 {
		cfg.JWKSRefreshUnknown = DefaultJWKSRefreshUnknown
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	a := &JWT{cfg: cfg, log: cfg.Logger}
	// Each key admits only its own algorithm, so that a public key can never
	// be used as an HMAC secret (alg confusion) and alg "none" never passes.
	var algs []string
	if len(cfg.Secret) > 0 {
		if len(cfg.Secret) < MinSecretLen {
			return nil, fmt.Errorf("auth: HS256 secret too short: %d bytes, want at least %d", len(cfg.Secret), MinSecretLen)
		}
		algs = append(algs, jwt.SigningMethodHS256.Alg())
	}
	if len(cfg.PublicKeyPEM) > 0 {
		alg, err := a.parseKey(cfg.PublicKeyPEM)
		if err != nil {
			return nil, err
		}
		algs = append(algs, alg)
	}
	if len(cfg.JWKS) > 0 || cfg.JWKSURL != "" {
		keys, err := openKeySet(ctx, cfg, a.log)
		if err != nil {
			return nil, err
		}
		a.jwks = keys
		// Which a URL's keys will be is known only as tokens come.
		for _, alg := range []string{jwt.SigningMethodRS256.Alg(), jwt.SigningMethodES256.Alg()} {
			if !slices.Contains(algs, alg) {
				algs = append(algs, alg)
			}
		}
	}
	if len(algs) == 0 {
		return nil, errors.New("auth: no key: set an HS256 secret, a public key, a JWKS or a JWKS URL")
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(algs),
		jwt.WithLeeway(cfg.Leeway),
		// Without exp a token would be good forever; the session ends at exp.
		jwt.WithExpirationRequired(),
		// Numbers stay exact, so that a numeric user id claim (a Spring
		// app's userId) is read as written, however large.
		jwt.WithJSONNumber(),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	a.parser = jwt.NewParser(opts...)
	return a, nil
}

// LoadPublicKey reads a PEM public key file for Config.PublicKeyPEM.
func LoadPublicKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: read public key: %w", err)
	}
	return b, nil
}

func (a *JWT) parseKey(data []byte) (string, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return "", errors.New("auth: public key: no PEM block")
	}
	var key any
	var err error
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	default:
		return "", fmt.Errorf("auth: public key: PEM block %q, want PUBLIC KEY or RSA PUBLIC KEY", block.Type)
	}
	if err != nil {
		return "", fmt.Errorf("auth: public key: %w", err)
	}
	if err := checkKey(key, ""); err != nil {
		return "", fmt.Errorf("auth: public key: %w", err)
	}
	switch k := key.(type) {
	case *rsa.PublicKey:
		a.rsa = k
		return jwt.SigningMethodRS256.Alg(), nil
	case *ecdsa.PublicKey:
		a.ec = k
	}
	return jwt.SigningMethodES256.Alg(), nil
}

// keyFor picks the verification key: the JWKS key the token's kid names,
// else by the kind of the token's algorithm, which the parser has already
// restricted to the configured ones. ctx bounds a JWKS fetch an unknown
// kid causes.
func (a *JWT) keyFor(ctx context.Context) jwt.Keyfunc {
	return func(t *jwt.Token) (any, error) {
		var jwksErr error
		if kid, ok := t.Header["kid"].(string); ok && a.jwks != nil {
			k, err := a.jwks.key(ctx, kid, t.Method.Alg())
			if !errors.Is(err, errNoKey) {
				return k, err
			}
			jwksErr = err // a key configured apart from the set may sign it
		}
		switch t.Method.(type) {
		case *jwt.SigningMethodHMAC:
			if len(a.cfg.Secret) > 0 {
				return a.cfg.Secret, nil
			}
		case *jwt.SigningMethodRSA:
			if a.rsa != nil {
				return a.rsa, nil
			}
		case *jwt.SigningMethodECDSA:
			if a.ec != nil {
				return a.ec, nil
			}
		}
		if jwksErr != nil {
			return nil, jwksErr
		}
		return nil, fmt.Errorf("no key for alg %s", t.Method.Alg())
	}
}

// Close stops refreshing the JWKS URL.
func (a *JWT) Close() {
	if a.jwks != nil {
		a.jwks.stop()
	}
}

// errUnauthorized is all a client learns of a refused token: details
// would help an attacker, so they go to the debug log.
var errUnauthorized = &stompws.Error{Kind: stompws.KindConnect, Message: "unauthorized"}

// Authenticate takes the token from the CONNECT frame or the WebSocket
// handshake (Token) and verifies it.
func (a *JWT) Authenticate(ctx context.Context, req *stompws.ConnectRequest) (stompws.Principal, error) {
	raw, source := a.Token(req)
	log := a.log.With("remote", remoteAddr(req), "token_source", source)
	if raw == "" {
		log.Debug("authentication refused", "reason", "no token")
		return stompws.Principal{}, errUnauthorized
	}
	id, err := a.Verify(ctx, raw)
	if err != nil {
		log.Debug("authentication refused", "reason", err)
		return stompws.Principal{}, errUnauthorized
	}
	return stompws.Principal{User: id.User, Expires: id.Expires}, nil
}

// Verify checks a token and returns who it names. ctx bounds a JWKS fetch
// the token's kid may cause.
func (a *JWT) Verify(ctx context.Context, raw string) (Identity, error) {
	claims := jwt.MapClaims{}
	if _, err := a.parser.ParseWithClaims(raw, claims, a.keyFor(ctx)); err != nil {
		return Identity{}, fmt.Errorf("verify token: %w", err)
	}
	user, ok := userClaim(claims[a.cfg.UserClaim])
	if !ok {
		return Identity{}, fmt.Errorf("verify token: claim %q missing, or neither a string nor an integer", a.cfg.UserClaim)
	}
	if a.cfg.ValidUser != nil && !a.cfg.ValidUser(user) {
		return Identity{}, fmt.Errorf("verify token: invalid user id in claim %q", a.cfg.UserClaim)
	}
	exp, err := claims.GetExpirationTime()
	if err != nil || exp == nil {
		return Identity{}, errors.New("verify token: no exp")
	}
	return Identity{User: user, Expires: exp.Time}, nil
}

// userClaim reads a user id claim: a non-empty string, or an integer
// (as its decimal digits).
func userClaim(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, v != ""
	case json.Number:
		if _, err := strconv.ParseInt(string(v), 10, 64); err != nil {
			return "", false
		}
		return string(v), true
	}
	return "", false
}

// Token finds the token, in this order: the CONNECT frame's
// ConnectHeader ("Bearer <token>" or the token alone) or passcode, then the
// handshake's Authorization header, access_token query parameter or
// cookie. It also names the source, for logs.
func (a *JWT) Token(req *stompws.ConnectRequest) (token, source string) {
	if req.Frame != nil {
		h := a.cfg.ConnectHeader
		if h == "" {
			h = "Authorization"
		}
		if t, ok := headerToken(req.Frame.Value(h)); ok {
			return t, "connect-header"
		}
		if t := req.Frame.Value("passcode"); t != "" {
			return t, "connect-passcode"
		}
	}
	r := req.Request
	if r == nil {
		return "", "none"
	}
	if t, ok := bearer(r.Header.Get("Authorization")); ok {
		return t, "handshake-authorization"
	}
	if t := r.URL.Query().Get("access_token"); t != "" {
		return t, "query"
	}
	if a.cfg.Cookie != "" {
		if c, err := r.Cookie(a.cfg.Cookie); err == nil && c.Value != "" {
			return c.Value, "cookie"
		}
	}
	return "", "none"
}

// headerToken reads a CONNECT header's token: "Bearer <token>", or a
// token alone (a value with no space; "Basic ..." is no token).
func headerToken(h string) (string, bool) {
	if t, ok := bearer(h); ok {
		return t, true
	}
	h = strings.TrimSpace(h)
	return h, h != "" && !strings.ContainsAny(h, " \t")
}

func bearer(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

func remoteAddr(req *stompws.ConnectRequest) string {
	if req.Request == nil {
		return ""
	}
	return req.Request.RemoteAddr
}
