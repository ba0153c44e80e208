package coordinator

import (
	"context"
	"testing"

	"github.com/pgquorum/pgquorum/consensus/clusterstate"
)

func TestVersionAgreementReportsEachProxysVersionOnce(t *testing.T) {
	raft := newFakeRaft(1, 2, 3)
	for _, proxy := range []uint64{1, 2, 3, 1, 2, 3} {
		a := &VersionAgreement{Raft: raft, State: raft.machine, Proxy: proxy}
		a.check(context.Background())
	}
	st := raft.machine.State()
	for _, proxy := range []uint64{1, 2, 3} {
		if got := st.ReportedVersion(proxy); got != clusterstate.MaxVersion {
			t.Fatalf("proxy %d reported %d, want %d", proxy, got, clusterstate.MaxVersion)
		}
	}
	// A fresh cluster starts at version 1; once every voter reported, the
	// leader raises it to the voters' version, once.
	if raises := raft.count(func(c clusterstate.Command) bool { return c.RaiseClusterVersion != nil }); raises != 1 {
		t.Fatalf("raised the cluster version %d times while every voter runs version %d; want once", raises, clusterstate.MaxVersion)
	}
	if v := st.AgreedVersion(); v != clusterstate.MaxVersion {
		t.Fatalf("cluster version %d, want %d", v, clusterstate.MaxVersion)
	}
	if reports := raft.count(func(c clusterstate.Command) bool { return c.ReportVersion != nil }); reports != 3 {
		t.Fatalf("%d version reports applied, want one per proxy", reports)
	}
}
