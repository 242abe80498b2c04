package stompws

// FlushInWriter hands the session's queue to its writer goroutine, as a
// flush does while a writer runs, for tests that mix the writer's writes
// with Flush's.
func (s *Session) FlushInWriter() { s.signal() }

// QueueState says how many frames the session has queued, and how many
// its queue and spare buffer can hold without growing.
func (sub *Subscription) QueueState() (queued, retained int) {
	s := sub.s
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue), cap(s.queue) + cap(s.spare)
}
