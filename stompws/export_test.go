package stompws

// FlushInWriter hands the session's queue to its writer goroutine, as a
// flush does while a writer runs, for tests that mix the writer's writes
// with Flush's.
func (s *Session) FlushInWriter() { s.signal() }
