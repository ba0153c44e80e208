package main

import (
	"context"
	"fmt"
	"io"

	"github.com/pgquorum/pgquorum/config"
	"github.com/pgquorum/pgquorum/consensus"
	"github.com/pgquorum/pgquorum/consensus/clusterstate"
)

// recoverCommand is the emergency procedure after losing a majority of the
// voters (docs/operations.md): without --force-new-cluster it describes the
// node's Raft log, so the operator can pick the survivor whose log goes
// furthest; with it, it makes that node the only voter (consensus.ForceNewCluster).
// The node must be stopped.
func recoverCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("recover", stderr)
	configPath := fs.String("config", "", "the stopped node's YAML configuration file (env PGQUORUM_CONFIG)")
	force := fs.Bool("force-new-cluster", false,
		"rewrite the Raft log so that this node is the only voter; the other voters are removed for good")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *configPath == "" {
		return fmt.Errorf("%w: --config FILE is required", errUsage)
	}
	cfg, err := config.Load(*configPath)
	if err != nil {
		return err
	}
	machine := clusterstate.NewMachine()
	opts := consensus.RecoverOptions{ClusterName: cfg.ClusterName, NodeID: cfg.Node.ID, DataDir: cfg.Node.DataDir, StateMachine: machine}
	if !*force {
		info, err := consensus.InspectLog(opts)
		if err != nil {
			return err
		}
		printLogInfo(stdout, info, machine.State())
		fmt.Fprintf(stdout, "\nRun this on the survivor whose log goes furthest (highest last term, then last index).\n"+
			"To make this node the only voter, with the other voters removed for good:\n"+
			"  pgquorum recover --force-new-cluster --config %s\n", *configPath)
		return nil
	}
	info, err := consensus.ForceNewCluster(opts)
	if err != nil {
		return err
	}
	printLogInfo(stdout, info, machine.State())
	var removed []uint64
	for _, id := range info.Voters {
		if id != cfg.Node.ID {
			removed = append(removed, id)
		}
	}
	fmt.Fprintf(stdout, "\nRecovered: node %d is now the only voter, with every entry of its log up to index %d; voters %v are removed.\n"+
		"Never start the removed voters again with their old data directories.\n"+
		"Next: start this node (pgquorum run --config %s), then add voters back with new ids: for each, a voter\n"+
		"certificate, node.voter: false and an empty data_dir, then pgquorum members add ID ADDR.\n",
		cfg.Node.ID, info.LastIndex, removed, *configPath)
	return nil
}

func printLogInfo(w io.Writer, info consensus.LogInfo, st clusterstate.State) {
	fmt.Fprintf(w, "Raft log of node %d (cluster %s): last index %d, last term %d, commit %d, snapshot %d\n",
		info.NodeID, info.ClusterName, info.LastIndex, info.LastTerm, info.Commit, info.SnapshotIndex)
	fmt.Fprintf(w, "Members in the log: voters %v, learners %v, removed %v\n", info.Voters, info.Learners, info.Removed)
	primary := st.Primary
	if primary == "" {
		primary = "(none)"
	}
	fmt.Fprintf(w, "Cluster state at the end of the log: epoch %d, primary %s, fenced %v", st.Epoch, primary, st.Fenced)
	if f := st.Failover; f != nil {
		fmt.Fprintf(w, ", %s failover from %s in progress (next step %s)", f.Kind, f.OldPrimary, f.Next)
	}
	fmt.Fprintln(w)
}
