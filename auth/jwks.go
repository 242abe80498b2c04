package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
)

// jwk is the part of a JSON Web Key (RFC 7517) chatd uses.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	N   string `json:"n"`
	E   string `json:"e"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

// LoadJWKS reads a JWKS file for Config.JWKS.
func LoadJWKS(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: read JWKS: %w", err)
	}
	return b, nil
}

// parseJWKS returns the set's signing keys by kid: RSA keys (RS256) and
// EC P-256 keys (ES256). Keys for encryption are skipped.
func parseJWKS(data []byte) (map[string]any, error) {
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("auth: JWKS: %w", err)
	}
	keys := map[string]any{}
	for i, k := range set.Keys {
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		if k.Kid == "" {
			return nil, fmt.Errorf("auth: JWKS key %d: no kid", i)
		}
		if _, dup := keys[k.Kid]; dup {
			return nil, fmt.Errorf("auth: JWKS key %q: kid used twice", k.Kid)
		}
		key, err := k.publicKey()
		if err != nil {
			return nil, fmt.Errorf("auth: JWKS key %q: %w", k.Kid, err)
		}
		keys[k.Kid] = key
	}
	if len(keys) == 0 {
		return nil, errors.New("auth: JWKS has no signing keys")
	}
	return keys, nil
}

func (k jwk) publicKey() (any, error) {
	b64 := base64.RawURLEncoding
	switch k.Kty {
	case "RSA":
		if k.Alg != "" && k.Alg != "RS256" {
			return nil, fmt.Errorf("alg %s, want RS256", k.Alg)
		}
		n, err := b64.DecodeString(k.N)
		if err != nil {
			return nil, fmt.Errorf("n: %w", err)
		}
		e, err := b64.DecodeString(k.E)
		if err != nil || len(e) == 0 || len(e) > 4 {
			return nil, errors.New("bad e")
		}
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		if pub.N.BitLen() < 2048 {
			return nil, fmt.Errorf("RSA key of %d bits, want at least 2048", pub.N.BitLen())
		}
		return pub, nil
	case "EC":
		if k.Crv != "P-256" || k.Alg != "" && k.Alg != "ES256" {
			return nil, fmt.Errorf("curve %s alg %s, want P-256 and ES256", k.Crv, k.Alg)
		}
		x, err := b64.DecodeString(k.X)
		if err != nil || len(x) != 32 {
			return nil, errors.New("bad x")
		}
		y, err := b64.DecodeString(k.Y)
		if err != nil || len(y) != 32 {
			return nil, errors.New("bad y")
		}
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
		if err != nil {
			return nil, fmt.Errorf("EC point: %w", err)
		}
		return pub, nil
	}
	return nil, fmt.Errorf("kty %q, want RSA or EC", k.Kty)
}
