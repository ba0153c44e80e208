package metrics

import (
	"strings"
	"unicode/utf8"
)

// MaxLabelValueBytes bounds a label value that comes from outside (a reason
// text, a node name). Longer values are cut at a character boundary.
const MaxLabelValueBytes = 256

// labelValue makes s a safe label value: valid UTF-8 (Prometheus refuses
// anything else) and at most MaxLabelValueBytes long.
func labelValue(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= MaxLabelValueBytes {
		return s
	}
	cut := MaxLabelValueBytes
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

// sqlstateLabel returns code if it is a well-formed SQLSTATE (five digits or
// upper-case ASCII letters), else "invalid".
func sqlstateLabel(code string) string {
	if len(code) != 5 {
		return "invalid"
	}
	for i := 0; i < len(code); i++ {
		c := code[i]
		if (c < '0' || c > '9') && (c < 'A' || c > 'Z') {
			return "invalid"
		}
	}
	return code
}

// oneOf returns v if it is one of known, else "unknown".
func oneOf(v string, known []string) string {
	for _, k := range known {
		if v == k {
			return v
		}
	}
	return "unknown"
}
