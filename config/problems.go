package config

import (
	"errors"
	"fmt"
	"strings"
)

// Problems is every problem found in a configuration, each naming its key
// ("listen.admin: ..."). Load and Validate return one, so an operator fixes
// everything in one go (`pgquorum check --config FILE`).
type Problems struct {
	// File is the configuration file, "" when validating a Config in memory.
	File string
	List []error
}

// Add records a problem with key.
func (p *Problems) Add(key, format string, args ...any) {
	p.List = append(p.List, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
}

// AddErr records err as is (it names its key already); nil is ignored.
func (p *Problems) AddErr(err error) {
	if err == nil {
		return
	}
	var more *Problems
	if errors.As(err, &more) {
		p.List = append(p.List, more.List...)
		return
	}
	p.List = append(p.List, err)
}

// Err is p, or nil when there is no problem.
func (p *Problems) Err() error {
	if len(p.List) == 0 {
		return nil
	}
	return p
}

func (p *Problems) Error() string {
	prefix := ""
	if p.File != "" {
		prefix = "config " + p.File + ": "
	}
	if len(p.List) == 1 {
		return prefix + p.List[0].Error()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s%d problems:", prefix, len(p.List))
	for _, err := range p.List {
		b.WriteString("\n  - ")
		b.WriteString(strings.ReplaceAll(err.Error(), "\n", "\n    "))
	}
	return b.String()
}

func (p *Problems) Unwrap() []error { return p.List }
