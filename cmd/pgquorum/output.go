package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
)

// Output formats of the commands that print data (SPEC §3.1: list, history
// and members list take -o json).
const (
	outputTable = "table"
	outputJSON  = "json"
)

// outputFlag adds -o (and --output) to fs and returns a function that checks
// the value once the flags are parsed.
func outputFlag(fs *flag.FlagSet) func() (string, error) {
	format := fs.String("o", outputTable, "output format: table or json (the admin API's JSON, for scripts)")
	fs.StringVar(format, "output", outputTable, "same as -o")
	return func() (string, error) {
		switch *format {
		case outputTable, outputJSON:
			return *format, nil
		}
		return "", fmt.Errorf("%w: -o %q: want table or json", errUsage, *format)
	}
}

// writeJSON prints v as indented JSON with a final newline.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
