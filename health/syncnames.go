package health

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// SyncMethod is how a primary chooses the standbys that must confirm a commit.
type SyncMethod int

const (
	// SyncOff: synchronous_standby_names is empty; commits wait for no standby.
	SyncOff SyncMethod = iota
	// SyncFirst: priority-based, "FIRST k (a, b)", "k (a, b)" or a plain list.
	SyncFirst
	// SyncAny: quorum-based, "ANY k (a, b)".
	SyncAny
)

// String returns "off", "FIRST" or "ANY".
func (m SyncMethod) String() string {
	switch m {
	case SyncOff:
		return "off"
	case SyncFirst:
		return "FIRST"
	case SyncAny:
		return "ANY"
	}
	return fmt.Sprintf("SyncMethod(%d)", int(m))
}

// Wildcard is the standby name that matches every walsender.
const Wildcard = "*"

// SyncSpec is a parsed synchronous_standby_names value.
//
// Names holds the standby names in the order written. Unquoted names are
// folded to lower case (as SQL identifiers are); quoted names keep their
// case. PostgreSQL itself compares standby names with application names
// case-insensitively whether they were quoted or not, so use Matches rather
// than == to compare. The name "*" (quoted or not) is the wildcard.
type SyncSpec struct {
	Method SyncMethod
	Num    int // k: how many standbys must confirm; 0 when Method is SyncOff
	Names  []string
}

// AnyOf returns the spec "ANY k (names...)".
func AnyOf(k int, names ...string) SyncSpec {
	return SyncSpec{Method: SyncAny, Num: k, Names: names}
}

// FirstOf returns the spec "FIRST k (names...)".
func FirstOf(k int, names ...string) SyncSpec {
	return SyncSpec{Method: SyncFirst, Num: k, Names: names}
}

// Matches reports whether a walsender with this application_name is one of
// the candidates for synchronous standby under s, exactly as PostgreSQL
// decides it: the wildcard matches everything, other names match ignoring
// ASCII case.
func (s SyncSpec) Matches(applicationName string) bool {
	if s.Method == SyncOff {
		return false
	}
	for _, name := range s.Names {
		if name == Wildcard || equalFoldASCII(name, applicationName) {
			return true
		}
	}
	return false
}

// HasWildcard reports whether s lists "*".
func (s SyncSpec) HasWildcard() bool {
	for _, name := range s.Names {
		if name == Wildcard {
			return true
		}
	}
	return false
}

// Validate reports why s could not be rendered into a value PostgreSQL
// accepts; nil for every spec ParseSyncStandbyNames returns.
func (s SyncSpec) Validate() error {
	switch s.Method {
	case SyncOff:
		if s.Num != 0 || len(s.Names) != 0 {
			return fmt.Errorf("synchronous replication is off but the spec has num %d and %d names", s.Num, len(s.Names))
		}
		return nil
	case SyncFirst, SyncAny:
	default:
		return fmt.Errorf("unknown synchronous replication method %d", int(s.Method))
	}
	if s.Num < 1 || s.Num > math.MaxInt32 {
		return fmt.Errorf("number of synchronous standbys (%d) must be between 1 and %d", s.Num, math.MaxInt32)
	}
	if len(s.Names) == 0 {
		return fmt.Errorf("%s %d needs at least one standby name", s.Method, s.Num)
	}
	for _, name := range s.Names {
		if strings.IndexByte(name, 0) >= 0 {
			return fmt.Errorf("standby name %q contains a NUL byte", name)
		}
	}
	return nil
}

// String renders s as a synchronous_standby_names value PostgreSQL accepts,
// in the explicit form "ANY 1 (pg2, pg3)" or "FIRST 1 (pg2, pg3)"; "" for
// SyncOff. Names are quoted only when they must be. Parsing the result gives
// back an equal spec. The result is only meaningful when Validate is nil.
func (s SyncSpec) String() string {
	if s.Method == SyncOff {
		return ""
	}
	var b strings.Builder
	b.WriteString(s.Method.String())
	b.WriteByte(' ')
	b.WriteString(strconv.Itoa(s.Num))
	b.WriteString(" (")
	for i, name := range s.Names {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(quoteStandbyName(name))
	}
	b.WriteByte(')')
	return b.String()
}

// quoteStandbyName renders one name so that the scanner reads it back
// unchanged: bare when it is "*", all digits, or a lower-case identifier
// that is not a keyword; double-quoted otherwise.
func quoteStandbyName(name string) string {
	if name == Wildcard || isDigits(name) {
		return name
	}
	if isIdentifier(name) && !isKeyword(name) && strings.ToLower(name) == name {
		return name
	}
	return `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
}

// ParseSyncStandbyNames parses a synchronous_standby_names value with
// PostgreSQL's grammar (src/backend/replication/syncrep_gram.y and
// syncrep_scanner.l):
//
//	""                  no synchronous replication (SyncOff)
//	a, b                FIRST 1 (a, b)
//	k (a, b)            FIRST k (a, b)
//	FIRST k (a, b)      priority: the k first connected standbys in list order
//	ANY k (a, b)        quorum: any k of the listed standbys
//
// A name is an identifier (letters, digits, '_', '$', bytes ≥ 0x80; not
// starting with a digit or '$'), a number, "*", or a double-quoted string in
// which "" stands for one quote. ANY and FIRST are keywords in any case and
// cannot be bare names. k must be at least 1. Whitespace is free between
// tokens. Like PostgreSQL, a value of only whitespace is a syntax error.
func ParseSyncStandbyNames(s string) (SyncSpec, error) {
	if s == "" {
		return SyncSpec{Method: SyncOff}, nil
	}
	if strings.IndexByte(s, 0) >= 0 {
		return SyncSpec{}, fmt.Errorf("synchronous_standby_names contains a NUL byte")
	}
	tokens, err := scanSyncStandbyNames(s)
	if err != nil {
		return SyncSpec{}, fmt.Errorf("synchronous_standby_names %q: %w", s, err)
	}
	p := syncParser{tokens: tokens}
	spec, err := p.parse()
	if err != nil {
		return SyncSpec{}, fmt.Errorf("synchronous_standby_names %q: %w", s, err)
	}
	return spec, nil
}

type syncTokenKind int

const (
	tokName  syncTokenKind = iota // identifier, quoted identifier or "*"
	tokNum                        // digits
	tokAny                        // ANY keyword
	tokFirst                      // FIRST keyword
	tokComma
	tokOpen
	tokClose
	tokEnd // end of input
)

type syncToken struct {
	kind syncTokenKind
	text string // the name (unquoted, folded) or digits; the raw text for punctuation
}

// scanSyncStandbyNames splits s into tokens the way syncrep_scanner.l does:
// longest match first, and a keyword wins over an identifier of the same
// length.
func scanSyncStandbyNames(s string) ([]syncToken, error) {
	var tokens []syncToken
	i := 0
	for i < len(s) {
		c := s[i]
		switch {
		case isSyncSpace(c):
			i++
		case c == '"':
			name, next, err := scanQuoted(s, i)
			if err != nil {
				return nil, err
			}
			tokens = append(tokens, syncToken{kind: tokName, text: name})
			i = next
		case isIdentStart(c):
			j := i + 1
			for j < len(s) && isIdentCont(s[j]) {
				j++
			}
			word := s[i:j]
			switch strings.ToLower(word) {
			case "any":
				tokens = append(tokens, syncToken{kind: tokAny, text: word})
			case "first":
				tokens = append(tokens, syncToken{kind: tokFirst, text: word})
			default:
				tokens = append(tokens, syncToken{kind: tokName, text: lowerASCII(word)})
			}
			i = j
		case '0' <= c && c <= '9':
			j := i + 1
			for j < len(s) && '0' <= s[j] && s[j] <= '9' {
				j++
			}
			tokens = append(tokens, syncToken{kind: tokNum, text: s[i:j]})
			i = j
		case c == '*':
			tokens = append(tokens, syncToken{kind: tokName, text: Wildcard})
			i++
		case c == ',':
			tokens = append(tokens, syncToken{kind: tokComma, text: ","})
			i++
		case c == '(':
			tokens = append(tokens, syncToken{kind: tokOpen, text: "("})
			i++
		case c == ')':
			tokens = append(tokens, syncToken{kind: tokClose, text: ")"})
			i++
		default:
			return nil, fmt.Errorf("syntax error at or near %q", s[i:i+1])
		}
	}
	return append(tokens, syncToken{kind: tokEnd}), nil
}

// scanQuoted reads a double-quoted name starting at s[start] == '"' and
// returns the name and the index just past the closing quote.
func scanQuoted(s string, start int) (string, int, error) {
	var b strings.Builder
	i := start + 1
	for i < len(s) {
		if s[i] != '"' {
			b.WriteByte(s[i])
			i++
			continue
		}
		if i+1 < len(s) && s[i+1] == '"' {
			b.WriteByte('"')
			i += 2
			continue
		}
		return b.String(), i + 1, nil
	}
	return "", 0, fmt.Errorf("unterminated quoted identifier starting at byte %d", start)
}

// syncParser is a recursive-descent parser for the token stream; it accepts
// exactly the language of syncrep_gram.y.
type syncParser struct {
	tokens []syncToken
	pos    int
}

func (p *syncParser) peek() syncToken { return p.tokens[p.pos] }

func (p *syncParser) next() syncToken {
	t := p.tokens[p.pos]
	if t.kind != tokEnd {
		p.pos++
	}
	return t
}

func (p *syncParser) parse() (SyncSpec, error) {
	var spec SyncSpec
	switch first := p.peek(); {
	case first.kind == tokAny || first.kind == tokFirst:
		p.next()
		spec.Method = SyncFirst
		if first.kind == tokAny {
			spec.Method = SyncAny
		}
		num, err := p.expectNum()
		if err != nil {
			return SyncSpec{}, err
		}
		spec.Num = num
		if spec.Names, err = p.parenthesizedList(); err != nil {
			return SyncSpec{}, err
		}
	case first.kind == tokNum && p.tokens[p.pos+1].kind == tokOpen:
		num, err := p.expectNum()
		if err != nil {
			return SyncSpec{}, err
		}
		spec.Method, spec.Num = SyncFirst, num
		if spec.Names, err = p.parenthesizedList(); err != nil {
			return SyncSpec{}, err
		}
	default:
		names, err := p.list()
		if err != nil {
			return SyncSpec{}, err
		}
		spec.Method, spec.Num, spec.Names = SyncFirst, 1, names
	}
	if t := p.peek(); t.kind != tokEnd {
		return SyncSpec{}, syntaxError(t)
	}
	return spec, nil
}

func (p *syncParser) expectNum() (int, error) {
	t := p.next()
	if t.kind != tokNum {
		return 0, syntaxError(t)
	}
	n, err := strconv.ParseInt(t.text, 10, 64)
	if err != nil || n > math.MaxInt32 {
		return 0, fmt.Errorf("number of synchronous standbys %s is out of range", t.text)
	}
	if n <= 0 {
		return 0, fmt.Errorf("number of synchronous standbys (%d) must be greater than zero", n)
	}
	return int(n), nil
}

func (p *syncParser) parenthesizedList() ([]string, error) {
	if t := p.next(); t.kind != tokOpen {
		return nil, syntaxError(t)
	}
	names, err := p.list()
	if err != nil {
		return nil, err
	}
	if t := p.next(); t.kind != tokClose {
		return nil, syntaxError(t)
	}
	return names, nil
}

// list parses standby_name { ',' standby_name }.
func (p *syncParser) list() ([]string, error) {
	var names []string
	for {
		t := p.next()
		if t.kind != tokName && t.kind != tokNum {
			return nil, syntaxError(t)
		}
		names = append(names, t.text)
		if p.peek().kind != tokComma {
			return names, nil
		}
		p.next()
	}
}

func syntaxError(t syncToken) error {
	if t.kind == tokEnd {
		return fmt.Errorf("syntax error at end of input")
	}
	return fmt.Errorf("syntax error at or near %q", t.text)
}

func isSyncSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

func isIdentStart(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '_' || c >= 0x80
}

func isIdentCont(c byte) bool {
	return isIdentStart(c) || '0' <= c && c <= '9' || c == '$'
}

func isIdentifier(s string) bool {
	if s == "" || !isIdentStart(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if !isIdentCont(s[i]) {
			return false
		}
	}
	return true
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func isKeyword(s string) bool {
	return equalFoldASCII(s, "any") || equalFoldASCII(s, "first")
}

// lowerASCII folds A-Z only, leaving bytes ≥ 0x80 alone, as PostgreSQL's
// identifier folding does in a multibyte encoding.
func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + ('a' - 'A')
		}
	}
	return string(b)
}

// equalFoldASCII compares like PostgreSQL's pg_strcasecmp for ASCII letters.
func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		ca, cb := a[i], b[i]
		if 'A' <= ca && ca <= 'Z' {
			ca += 'a' - 'A'
		}
		if 'A' <= cb && cb <= 'Z' {
			cb += 'a' - 'A'
		}
		if ca != cb {
			return false
		}
	}
	return true
}
