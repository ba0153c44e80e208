package health

import (
	"fmt"
	"strconv"
)

// LSN is a PostgreSQL write-ahead log position (the pg_lsn type): a byte
// offset into the WAL stream. It prints and parses as PostgreSQL does, two
// hexadecimal halves separated by a slash: "0/3000060". Zero means "unknown"
// or "not applicable" (PostgreSQL returns NULL there).
type LSN uint64

// String renders l as PostgreSQL does, for example "16/B374D848".
func (l LSN) String() string {
	return fmt.Sprintf("%X/%X", uint32(l>>32), uint32(l))
}

// MarshalText renders l as String does, so JSON shows "0/3000060".
func (l LSN) MarshalText() ([]byte, error) {
	return []byte(l.String()), nil
}

// UnmarshalText parses the form String produces.
func (l *LSN) UnmarshalText(text []byte) error {
	parsed, err := ParseLSN(string(text))
	if err != nil {
		return err
	}
	*l = parsed
	return nil
}

// ParseLSN parses PostgreSQL's text form of an LSN: 1 to 8 hexadecimal digits
// (either case), a slash, 1 to 8 hexadecimal digits, nothing else. This is
// the same input PostgreSQL's pg_lsn type accepts.
func ParseLSN(s string) (LSN, error) {
	slash := -1
	for i := 0; i < len(s); i++ {
		if s[i] == '/' {
			slash = i
			break
		}
	}
	if slash < 0 {
		return 0, fmt.Errorf("parse LSN %q: missing '/'", s)
	}
	high, err := parseLSNHalf(s[:slash])
	if err != nil {
		return 0, fmt.Errorf("parse LSN %q: %w", s, err)
	}
	low, err := parseLSNHalf(s[slash+1:])
	if err != nil {
		return 0, fmt.Errorf("parse LSN %q: %w", s, err)
	}
	return LSN(high<<32 | low), nil
}

// parseLSNHalf parses one half of an LSN: 1 to 8 hex digits, no sign, no
// prefix, no spaces (strconv alone would accept "+1" or "0x1" forms).
func parseLSNHalf(s string) (uint64, error) {
	if len(s) == 0 || len(s) > 8 {
		return 0, fmt.Errorf("want 1 to 8 hexadecimal digits, got %d characters", len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return 0, fmt.Errorf("invalid hexadecimal digit %q", c)
		}
	}
	return strconv.ParseUint(s, 16, 32)
}
