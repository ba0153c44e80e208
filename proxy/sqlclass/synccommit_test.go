package sqlclass

import "testing"

func TestLowersSyncCommit(t *testing.T) {
	cases := []struct {
		text    string
		flagged bool // Summary.SyncCommit
		lowers  bool
	}{
		{"SET synchronous_commit = off", true, true},
		{"set Synchronous_Commit to 'local'", true, true},
		{"SET SESSION synchronous_commit TO remote_write", true, true},
		{"SET LOCAL synchronous_commit = OFF", true, true},
		{`SET "synchronous_commit" = false`, true, true},
		{"SET synchronous_commit = 0", true, true},
		{"SET synchronous_commit = no", true, true},
		{`SET synchronous_commit = "off"`, true, true},
		{"SET synchronous_commit = on", true, false},
		{"SET synchronous_commit TO remote_apply", true, false},
		{"SET synchronous_commit = 'true'", true, false},
		{"SET synchronous_commit TO DEFAULT", true, false},
		{"SET LOCAL synchronous_commit = 1", true, false},
		{"SET synchronous_commit = $1", true, true},
		{"SELECT 1; SET synchronous_commit = off; SELECT 2", true, true},
		{"SELECT set_config('synchronous_commit', 'off', false)", true, true},
		{"SELECT set_config('synchronous_commit', 'local', true)", true, true},
		{"SELECT set_config('SYNCHRONOUS_COMMIT', $1, false)", true, true},
		{"SELECT set_config('synchronous_commit', 'on', false)", true, false},
		{"SELECT set_config('search_path', 'public', false)", true, false},
		{"SELECT set_config($1, $2, false)", true, false},
		{"SET search_path = off", false, false},
		{"SELECT 'SET synchronous_commit = off'", false, false},
		{"-- SET synchronous_commit = off\nSELECT 1", false, false},
		{"RESET synchronous_commit", false, false},
		{"SHOW synchronous_commit", false, false},
	}
	for _, c := range cases {
		sum := Classify([]byte(c.text), false)
		if sum.SyncCommit != c.flagged {
			t.Errorf("%q: Summary.SyncCommit = %v, want %v", c.text, sum.SyncCommit, c.flagged)
		}
		if got := LowersSyncCommit([]byte(c.text), false); got != c.lowers {
			t.Errorf("%q: LowersSyncCommit = %v, want %v", c.text, got, c.lowers)
		}
	}
}

// Classify stays free of allocations for a text that sets synchronous_commit.
func TestClassifySyncCommitAllocs(t *testing.T) {
	text := []byte("SET synchronous_commit = off")
	if n := testing.AllocsPerRun(100, func() { Classify(text, false) }); n != 0 {
		t.Fatalf("Classify allocates %v times per call", n)
	}
}

func TestParamCount(t *testing.T) {
	for text, want := range map[string]int{
		"SELECT 1":                 0,
		"SELECT $1, $3":            3,
		"SELECT '$9', $2 -- $7":    2,
		"SELECT $$ $5 $$, $12":     12,
		"SET synchronous_commit=1": 0,
	} {
		if got := ParamCount([]byte(text), false); got != want {
			t.Errorf("ParamCount(%q) = %d, want %d", text, got, want)
		}
	}
}
