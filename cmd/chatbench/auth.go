package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// auth lets chatbench load a chatd that checks tokens (--jwt-secret)
// rather than one in dev mode: it signs a token for each login, sent as
// CONNECT's passcode, and makes the rooms of a run, and their members,
// through chatd's HTTP API, since outside dev mode nobody joins a room by
// using it.
type auth struct {
	secret   []byte
	issuer   string
	audience string
	ttl      time.Duration // how long tokens last: the whole run
	api      string        // http(s)://host:port of the chatd under load
	client   *http.Client
}

func newAuth(cfg *config) (*auth, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("--url: %w", err)
	}
	scheme := "http"
	if u.Scheme == "wss" {
		scheme = "https"
	}
	return &auth{
		secret: []byte(cfg.JWTSecret), issuer: cfg.JWTIssuer, audience: cfg.JWTAudience,
		ttl: cfg.Timeout + time.Hour, api: scheme + "://" + u.Host,
		client: &http.Client{Timeout: 30 * time.Second},
	}, nil
}

// token signs an HS256 token for the user.
func (a *auth) token(user string) (string, error) {
	now := time.Now()
	claims := jwt.MapClaims{"sub": user, "iat": now.Unix(), "exp": now.Add(a.ttl).Unix()}
	if a.issuer != "" {
		claims["iss"] = a.issuer
	}
	if a.audience != "" {
		claims["aud"] = a.audience
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(a.secret)
	if err != nil {
		return "", fmt.Errorf("sign token for %s: %w", user, err)
	}
	return s, nil
}

// ensureRooms makes each room, its first member the owner, and adds the
// other members. Rooms or members that already exist (a run with a fixed
// --room-prefix, again) are fine. Rooms are set up conc at a time.
func (a *auth) ensureRooms(ctx context.Context, rooms map[string][]string, conc int) error {
	sem := make(chan struct{}, max(conc, 1))
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for room, members := range rooms {
		if len(members) == 0 {
			continue
		}
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := a.ensureRoom(ctx, room, members); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return first
}

func (a *auth) ensureRoom(ctx context.Context, room string, members []string) error {
	owner := members[0]
	if err := a.post(ctx, owner, "/api/rooms", map[string]string{"id": room}); err != nil {
		return fmt.Errorf("create room %s: %w", room, err)
	}
	for _, m := range members[1:] {
		if err := a.post(ctx, owner, "/api/rooms/"+url.PathEscape(room)+"/members", map[string]string{"userId": m}); err != nil {
			return fmt.Errorf("add %s to room %s: %w", m, room, err)
		}
	}
	return nil
}

// post sends body as user; 201 Created and 409 Conflict (already there)
// are both success.
func (a *auth) post(ctx context.Context, user, path string, body any) error {
	tok, err := a.token(user)
	if err != nil {
		return err
	}
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.api+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.client.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusConflict {
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}
