// Package learners removes sidecar learners that have gone away.
//
// Sidecars come and go with the application pods they serve (a Deployment
// scaled down, a rollout, a pod evicted for good), and a learner whose pod is
// gone stays a Raft member until someone removes it: the leader keeps dialing
// it and its observations stay in the cluster state. The Pruner, which acts
// only on the Raft leader, removes every learner the leader has not heard from
// for RemoveAfter (config learners.remove_after), and then drops its
// observations (ForgetProxy).
//
// The decision is a pure function (Decide) of the members, the leader's last
// contact with each and when this node became the leader: a leader that has
// just taken over has heard from nobody yet, so its clock for every learner
// starts at its own election. Voters are never removed (losing a voter is an
// operator's decision: `pgquorum members remove`).
//
// A removed id is never re-admitted (package consensus). A sidecar with
// node.id: auto draws a new id when it finds itself removed and starts afresh
// (node/identity.go); one with a fixed id must be given a new one.
package learners

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/pgquorum/pgquorum/consensus"
	"github.com/pgquorum/pgquorum/consensus/clusterstate"
)

// DefaultRemoveAfter is RemoveAfter when the configuration does not say.
const DefaultRemoveAfter = 10 * time.Minute

// maxRemovalsPerRound bounds the membership changes one round proposes (each
// is a Raft commit); the rest wait for the next round.
const maxRemovalsPerRound = 16

// Raft is what the Pruner needs from the local Raft member (*consensus.Node).
type Raft interface {
	Status() consensus.Status
	Members() []consensus.Member
	RemoveMember(ctx context.Context, id uint64) error
	Propose(ctx context.Context, data []byte) ([]byte, error)
}

// Pruner removes learners the leader has not heard from for RemoveAfter.
// Owner: its Run goroutine; its fields are set before Run and not changed.
type Pruner struct {
	Raft Raft
	// RemoveAfter is how long the leader must not have heard from a learner
	// before it removes it. Zero or negative: Run does nothing (the feature
	// is off).
	RemoveAfter time.Duration
	// Every is how often the members are looked at; default RemoveAfter/10,
	// between 1 s and 1 min.
	Every time.Duration
	// Removed, if set, is called for every learner removed (metrics).
	Removed func(id uint64)
	Logger  *slog.Logger
	// now is time.Now; tests replace it.
	now func() time.Time
}

// Run looks at the members every Every until ctx ends; it acts only while
// this node is the Raft leader. It returns nil when ctx ends.
func (p *Pruner) Run(ctx context.Context) error {
	if p.RemoveAfter <= 0 {
		<-ctx.Done()
		return nil
	}
	every := p.Every
	if every <= 0 {
		every = min(max(p.RemoveAfter/10, time.Second), time.Minute)
	}
	now := p.now
	if now == nil {
		now = time.Now
	}
	ticker := time.NewTicker(every)
	defer ticker.Stop()
	var leaderSince time.Time // zero while not the leader
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
		st := p.Raft.Status()
		switch {
		case !st.IsLeader:
			leaderSince = time.Time{}
			continue
		case leaderSince.IsZero():
			leaderSince = now()
		}
		for _, id := range Decide(now(), leaderSince, st.ID, p.Raft.Members(), p.RemoveAfter) {
			if err := p.remove(ctx, id); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				p.logger().Warn("could not remove a learner that went away; trying again later", "learner", id, "err", err)
				break
			}
		}
	}
}

// remove removes learner id from the membership and its observations from the
// cluster state.
func (p *Pruner) remove(ctx context.Context, id uint64) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := p.Raft.RemoveMember(ctx, id); err != nil && !errors.Is(err, consensus.ErrUnknownMember) {
		return err
	}
	p.logger().Warn("removed a learner the leader has not heard from", "learner", id, "after", p.RemoveAfter.String())
	if p.Removed != nil {
		p.Removed(id)
	}
	data, err := clusterstate.Encode(clusterstate.Command{ForgetProxy: &clusterstate.ForgetProxy{Proxy: id}})
	if err != nil {
		return fmt.Errorf("encode forget_proxy: %w", err)
	}
	if _, err := p.Raft.Propose(ctx, data); err != nil {
		// The observations of a removed proxy are stale, not harmful: the
		// next removal round does not retry; log it.
		p.logger().Info("could not drop the removed learner's observations", "learner", id, "err", err)
	}
	return nil
}

func (p *Pruner) logger() *slog.Logger {
	if p.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return p.Logger
}

// Decide returns the learners to remove now, lowest id first, at most
// maxRemovalsPerRound: every learner other than self whose last contact with
// the leader — the later of LastHeard and leaderSince, when this node became
// the leader — is at least removeAfter ago. Voters are never returned. Pure.
func Decide(now, leaderSince time.Time, self uint64, members []consensus.Member, removeAfter time.Duration) []uint64 {
	if removeAfter <= 0 {
		return nil
	}
	var out []uint64
	for _, m := range members {
		if m.Voter || m.ID == self {
			continue
		}
		last := m.LastHeard
		if last.Before(leaderSince) {
			last = leaderSince
		}
		if now.Sub(last) >= removeAfter {
			out = append(out, m.ID)
		}
	}
	slices.Sort(out)
	if len(out) > maxRemovalsPerRound {
		out = out[:maxRemovalsPerRound]
	}
	return out
}
