//go:build !linux

// Elsewhere than Linux there is no poller: idle sessions keep their
// goroutines.

package stompws

import "errors"

// poller has no portable form: elsewhere an idle session keeps its
// goroutine, parked in the runtime's poller.
type poller struct{}

func newPoller() (*poller, error) { return nil, errors.New("no epoll on this system") }

func (p *poller) arm(*Session) error { return errors.New("no epoll on this system") }
func (p *poller) forget(*Session)    {}
func (p *poller) stop()              {}
