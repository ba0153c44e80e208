package faults

import (
	"fmt"
	"slices"
)

// Acknowledged is the verdict of VerifyAcknowledged on one PostgreSQL node.
type Acknowledged struct {
	Node    string
	Checked int // acknowledged writes looked for
	Rows    int // rows of the write log on the node
	// Missing are acknowledged writes the node does not have: lost commits.
	Missing []int64
	// Duplicated are writes the node has more than once: a request sent twice.
	Duplicated []int64
	// Unexpected are values on the node that no client ever wrote.
	Unexpected []int64
}

// OK reports whether nothing is missing, duplicated or unexpected.
func (a Acknowledged) OK() bool {
	return len(a.Missing) == 0 && len(a.Duplicated) == 0 && len(a.Unexpected) == 0
}

func (a Acknowledged) String() string {
	head := func(ids []int64) []int64 { return ids[:min(len(ids), 10)] }
	if a.OK() {
		return fmt.Sprintf("%s: all %d acknowledged writes present once (%d rows)", a.Node, a.Checked, a.Rows)
	}
	return fmt.Sprintf("%s: of %d acknowledged writes %d missing (e.g. %v), %d written more than once (e.g. %v), %d never written (e.g. %v)",
		a.Node, a.Checked, len(a.Missing), head(a.Missing), len(a.Duplicated), head(a.Duplicated),
		len(a.Unexpected), head(a.Unexpected))
}

// VerifyAcknowledged compares the write log read from a node (value -> number
// of rows) with the writes the clients sent: every acknowledged value must be
// there exactly once, no value more than once, and nothing that was never
// written (attempted holds every value sent, acknowledged or not). Pure.
func VerifyAcknowledged(node string, acknowledged, attempted []int64, counts map[int64]int) Acknowledged {
	a := Acknowledged{Node: node, Checked: len(acknowledged)}
	sent := make(map[int64]bool, len(attempted))
	for _, v := range attempted {
		sent[v] = true
	}
	for _, v := range acknowledged {
		if counts[v] == 0 {
			a.Missing = append(a.Missing, v)
		}
	}
	for v, n := range counts {
		a.Rows += n
		if n > 1 {
			a.Duplicated = append(a.Duplicated, v)
		}
		if !sent[v] {
			a.Unexpected = append(a.Unexpected, v)
		}
	}
	slices.Sort(a.Missing)
	slices.Sort(a.Duplicated)
	slices.Sort(a.Unexpected)
	return a
}
