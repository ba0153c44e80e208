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

// KeyError is one problem with one key.
type KeyError struct {
	Key     string // dotted, e.g. "backends[1].name"
	Problem string
}

func (e *KeyError) Error() string { return e.Key + ": " + e.Problem }

// Add records a problem with key.
func (p *Problems) Add(key, format string, args ...any) {
	p.List = append(p.List, &KeyError{Key: key, Problem: fmt.Sprintf(format, args...)})
}

// addUnlessReported adds the problems whose key (or a parent or child key)
// has none yet: a value that could not be read is not reported again as
// missing or invalid.
func (p *Problems) addUnlessReported(more []error) {
	reported := map[string]bool{}
	for _, err := range p.List {
		var ke *KeyError
		if errors.As(err, &ke) {
			reported[ke.Key] = true
		}
	}
	related := func(key string) bool {
		for r := range reported {
			if key == r || strings.HasPrefix(key, r+".") || strings.HasPrefix(key, r+"[") ||
				strings.HasPrefix(r, key+".") || strings.HasPrefix(r, key+"[") {
				return true
			}
		}
		return false
	}
	for _, err := range more {
		var ke *KeyError
		if errors.As(err, &ke) && related(ke.Key) {
			continue
		}
		p.List = append(p.List, err)
	}
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
