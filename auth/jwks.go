package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// Defaults of a JWKS URL's refreshes (Config.JWKSRefresh, JWKSRefreshUnknown).
const (
	// DefaultJWKSRefresh is how often the set is fetched again: as Spring
	// Security's JWKS cache, so that a key the identity provider removes
	// stops working within minutes.
	DefaultJWKSRefresh = 5 * time.Minute
	// DefaultJWKSRefreshUnknown spaces the fetches a token with an unknown
	// kid causes, so that a flood of made-up kids cannot hammer the
	// identity provider.
	DefaultJWKSRefreshUnknown = 30 * time.Second
)

// jwksTimeout bounds one fetch of a JWKS URL, and what a token with an
// unknown kid may wait for the rate limiter and that fetch together.
const jwksTimeout = 10 * time.Second

// LoadJWKS reads a JWKS file for Config.JWKS.
func LoadJWKS(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: read JWKS: %w", err)
	}
	return b, nil
}

// CheckJWKSURL checks a JWKS URL: https, as keys fetched in the clear
// could be swapped for an attacker's, or http to a loopback address (an
// identity provider's sidecar, a test).
func CheckJWKSURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("not a URL: %w", err)
	}
	switch {
	case u.Host == "" || u.Hostname() == "":
		return errors.New("want https://host/path")
	case u.Scheme == "https":
		return nil
	case u.Scheme == "http" && isLoopback(u.Hostname()):
		return nil
	case u.Scheme == "http":
		return errors.New("http only to a loopback address: keys fetched in the clear could be an attacker's; use https")
	}
	return fmt.Errorf("scheme %q, want https", u.Scheme)
}

// checkJWKSRedirect holds a redirect of the JWKS URL to CheckJWKSURL's
// rule, so that an https URL is never redirected to plain http, and to
// Go's limit of ten redirects.
func checkJWKSRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	if err := CheckJWKSURL(req.URL.String()); err != nil {
		return fmt.Errorf("redirect to %s: %w", redact(req.URL.String()), err)
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// keySet is the JWKS keys tokens name by kid: a file's, read at start,
// and a URL's, fetched at start and refreshed by jwkset (on an interval,
// and on an unknown kid, rate-limited), the file's first.
type keySet struct {
	store jwkset.Storage
	// stop ends the URL's refreshes.
	stop context.CancelFunc
}

// errNoKey: the set has no key of that kid, or could not fetch it now.
var errNoKey = errors.New("no JWKS key")

// openKeySet reads cfg.JWKS and fetches cfg.JWKSURL. The fetch at start
// must succeed: until it has, chatd could let no one in.
func openKeySet(ctx context.Context, cfg Config, log *slog.Logger) (*keySet, error) {
	given := jwkset.NewMemoryStorage()
	if len(cfg.JWKS) > 0 {
		keys, err := parseJWKS(cfg.JWKS)
		if err != nil {
			return nil, err
		}
		for _, k := range keys {
			if err := given.KeyWrite(ctx, k); err != nil {
				return nil, fmt.Errorf("auth: JWKS: %w", err)
			}
		}
	}
	opts := jwkset.HTTPClientOptions{Given: given}
	// The refreshes live until Close; ctx bounds only the start.
	life, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer context.AfterFunc(ctx, stop)()
	if cfg.JWKSURL != "" {
		if err := CheckJWKSURL(cfg.JWKSURL); err != nil {
			stop()
			return nil, fmt.Errorf("auth: JWKS URL: %w", err)
		}
		shown := redact(cfg.JWKSURL)
		log := log.With("jwks_url", shown)
		fetched, err := jwkset.NewStorageFromHTTP(cfg.JWKSURL, jwkset.HTTPClientStorageOptions{
			Client:          &http.Client{CheckRedirect: checkJWKSRedirect},
			Ctx:             life,
			HTTPTimeout:     jwksTimeout,
			RefreshInterval: cfg.JWKSRefresh,
			RefreshErrorHandler: func(_ context.Context, err error) {
				log.Warn("JWKS fetch failed; the keys fetched last stay in use", "err", err)
			},
			Storage: &checkedSet{MemoryJWKSet: jwkset.NewMemoryStorage(), log: log},
		})
		if err != nil {
			stop()
			return nil, fmt.Errorf("auth: JWKS URL %s: %w", shown, err)
		}
		opts.HTTPURLs = map[string]jwkset.Storage{cfg.JWKSURL: fetched}
		opts.RateLimitWaitMax = jwksTimeout
		opts.RefreshUnknownKID = rate.NewLimiter(rate.Every(cfg.JWKSRefreshUnknown), 1)
	}
	store, err := jwkset.NewHTTPClient(opts)
	if err != nil {
		stop()
		return nil, fmt.Errorf("auth: JWKS: %w", err)
	}
	return &keySet{store: store, stop: stop}, nil
}

// key returns the key of kid for a token signed with alg. A fetch it
// causes is bounded by ctx and jwksTimeout.
func (s *keySet) key(ctx context.Context, kid, alg string) (any, error) {
	k, err := s.store.KeyRead(ctx, kid)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %w", errNoKey, kid, err)
	}
	key, err := fit(k, alg)
	if err != nil {
		return nil, fmt.Errorf("JWKS key %q: %w", kid, err)
	}
	return key, nil
}

// parseJWKS reads a JWKS file, strictly: every signing key must be one
// chatd can use, so that a mistake shows at start. Keys for encryption
// are skipped.
func parseJWKS(data []byte) ([]jwkset.JWK, error) {
	var set jwkset.JWKSMarshal
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("auth: JWKS: %w", err)
	}
	var keys []jwkset.JWK
	var kids []string
	for i, m := range set.Keys {
		if m.USE != "" && m.USE != jwkset.UseSig {
			continue
		}
		if m.KID == "" {
			return nil, fmt.Errorf("auth: JWKS key %d: no kid", i)
		}
		if slices.Contains(kids, m.KID) {
			return nil, fmt.Errorf("auth: JWKS key %q: kid used twice", m.KID)
		}
		k, err := jwkset.NewJWKFromMarshal(m, jwkset.JWKMarshalOptions{}, jwkset.JWKValidateOptions{})
		if err != nil {
			return nil, fmt.Errorf("auth: JWKS key %q: %w", m.KID, err)
		}
		if _, err := fit(k, ""); err != nil {
			return nil, fmt.Errorf("auth: JWKS key %q: %w", m.KID, err)
		}
		keys, kids = append(keys, k), append(kids, m.KID)
	}
	if len(keys) == 0 {
		return nil, errors.New("auth: JWKS has no signing keys")
	}
	return keys, nil
}

// fit returns a JWKS key's public key if it may verify a token signed
// with alg ("": any algorithm the key allows).
func fit(k jwkset.JWK, alg string) (any, error) {
	m := k.Marshal()
	if m.USE != "" && m.USE != jwkset.UseSig {
		return nil, fmt.Errorf("use %q, not sig", m.USE)
	}
	if m.ALG != "" {
		if alg != "" && m.ALG.String() != alg {
			return nil, fmt.Errorf("alg %s, token signed with %s", m.ALG, alg)
		}
		alg = m.ALG.String()
	}
	key := k.Key()
	if err := checkKey(key, alg); err != nil {
		return nil, err
	}
	return key, nil
}

// checkKey says whether key may verify alg ("": any it fits): RSA keys of
// 2048 bits or more verify RS256 and EC P-256 keys ES256; no other key
// verifies anything, so that no key can serve another algorithm (as a
// public key would as an HMAC secret).
func checkKey(key any, alg string) error {
	var want string
	switch k := key.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("RSA key of %d bits, want at least 2048", k.N.BitLen())
		}
		want = jwt.SigningMethodRS256.Alg()
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return errors.New("EC key not on P-256 (ES256)")
		}
		want = jwt.SigningMethodES256.Alg()
	default:
		return fmt.Errorf("%T key, want an RSA or EC P-256 public key", key)
	}
	if alg != "" && alg != want {
		return fmt.Errorf("%s key, token signed with %s", want, alg)
	}
	return nil
}

// checkedSet holds a JWKS URL's keys as jwkset fetches them. A set with
// no key chatd can use (an error page served as JSON, an emptied set)
// counts as a failed fetch, so the last good keys stay; a change of keys
// is logged.
type checkedSet struct {
	*jwkset.MemoryJWKSet
	log *slog.Logger
}

func (c *checkedSet) KeyReplaceAll(ctx context.Context, keys []jwkset.JWK) error {
	var kids, skipped []string
	for _, k := range keys {
		m := k.Marshal()
		if m.USE != "" && m.USE != jwkset.UseSig {
			continue // an encryption key, as identity providers publish beside their signing keys
		}
		reason := "no kid"
		_, err := fit(k, "")
		if err != nil {
			reason = err.Error()
		}
		if err != nil || m.KID == "" {
			skipped = append(skipped, fmt.Sprintf("%q: %s", m.KID, reason))
			continue
		}
		kids = append(kids, m.KID)
	}
	if len(kids) == 0 {
		return fmt.Errorf("no RS256 or ES256 signing key with a kid (skipped: %v)", skipped)
	}
	before, err := c.KeyReadAll(ctx)
	if err != nil {
		return fmt.Errorf("read keys: %w", err)
	}
	if err := c.MemoryJWKSet.KeyReplaceAll(ctx, keys); err != nil {
		return fmt.Errorf("store keys: %w", err)
	}
	slices.Sort(kids)
	if was := usable(before); !slices.Equal(kids, was) {
		c.log.Info("JWKS keys changed", "kids", kids, "before", was, "skipped", skipped)
	}
	return nil
}

// usable is the sorted kids of keys that fit.
func usable(keys []jwkset.JWK) []string {
	var kids []string
	for _, k := range keys {
		if _, err := fit(k, ""); err == nil && k.Marshal().KID != "" {
			kids = append(kids, k.Marshal().KID)
		}
	}
	slices.Sort(kids)
	return kids
}

// redact hides a password in a URL, for logs and errors.
func redact(s string) string {
	if u, err := url.Parse(s); err == nil {
		return u.Redacted()
	}
	return s
}
