package health

// changeQueue holds the changes the Monitor has not delivered yet, at most
// one per node. A new change of a node that already has one waiting is
// merged into it: From stays the state the consumer last heard of, To
// becomes the newest state. When the merge leaves From equal to To (a node
// went down and came back before anyone looked), the node's entry is
// dropped: there is nothing left to report.
//
// It is owned by the Monitor's detector loop.
type changeQueue struct {
	order   []string          // nodes with a waiting change, oldest first
	pending map[string]Change // the waiting change of each node in order
}

func (q *changeQueue) push(c Change) {
	if q.pending == nil {
		q.pending = map[string]Change{}
	}
	old, waiting := q.pending[c.Node]
	if !waiting {
		q.pending[c.Node] = c
		q.order = append(q.order, c.Node)
		return
	}
	c.From = old.From
	c.Coalesced = old.Coalesced + 1
	if c.From == c.To {
		q.remove(c.Node)
		return
	}
	q.pending[c.Node] = c
}

// peek returns the oldest waiting change.
func (q *changeQueue) peek() (Change, bool) {
	if len(q.order) == 0 {
		return Change{}, false
	}
	return q.pending[q.order[0]], true
}

// pop removes the change peek returned.
func (q *changeQueue) pop() {
	if len(q.order) > 0 {
		q.remove(q.order[0])
	}
}

func (q *changeQueue) len() int { return len(q.order) }

func (q *changeQueue) remove(node string) {
	delete(q.pending, node)
	for i, n := range q.order {
		if n == node {
			q.order = append(q.order[:i], q.order[i+1:]...)
			return
		}
	}
}
