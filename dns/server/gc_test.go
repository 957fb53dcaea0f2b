package server

import (
	"runtime/debug"
	"testing"
)

// The sidecar collects at gcPercent unless GOGC says otherwise.
func TestTuneGC(t *testing.T) {
	prev := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(prev) })
	for _, tc := range []struct {
		env  string
		want int
	}{
		{"", gcPercent},
		{"100", 100},
		{"off", 100},
	} {
		t.Setenv("GOGC", tc.env)
		debug.SetGCPercent(100)
		tuneGC()
		if got := debug.SetGCPercent(100); got != tc.want {
			t.Errorf("GOGC=%q: collector percentage %d, want %d", tc.env, got, tc.want)
		}
	}
}
