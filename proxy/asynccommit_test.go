package proxy

import (
	"slices"
	"testing"
)

func TestOptionSettings(t *testing.T) {
	for options, want := range map[string][]string{
		"-c synchronous_commit=off":                                {"off"},
		"-csynchronous_commit=local -c work_mem=64MB":              {"local"},
		"--synchronous-commit=remote_write":                        {"remote_write"},
		`-c search_path=a\ b -c SYNCHRONOUS_COMMIT=on`:             {"on"},
		"-c application_name=x":                                    nil,
		`-c application_name=synchronous_commit\=off`:              nil,
		"  -c   synchronous_commit=off  -c synchronous_commit=on ": {"off", "on"},
	} {
		if got := optionSettings(options, "synchronous_commit"); !slices.Equal(got, want) {
			t.Errorf("optionSettings(%q) = %q, want %q", options, got, want)
		}
	}
}
