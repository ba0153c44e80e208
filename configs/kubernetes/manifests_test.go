// Package kubernetes_test checks the example Kubernetes manifests: that they
// parse, that the pgquorum configuration each pod would run with is valid
// (the config package's own Parse, ApplyEnv and Validate, with the pod's
// environment resolved as the kubelet does), and that ports, probes, volumes,
// secrets and peer DNS names agree with each other. Kubernetes itself is not
// needed; the API server's own validation is not reproduced.
package kubernetes_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/pgquorum/pgquorum/config"
)

// manifest is one parsed YAML document.
type manifest struct {
	file string
	header
	node *yaml.Node
}

func (m manifest) decode(t *testing.T, into any) {
	t.Helper()
	if err := m.node.Decode(into); err != nil {
		t.Fatalf("%s: %s %s: %v", m.file, m.Kind, m.Metadata.Name, err)
	}
}

// loadManifests parses every *.yaml file of this directory.
func loadManifests(t *testing.T) []manifest {
	t.Helper()
	files, err := filepath.Glob("*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	var all []manifest
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for {
			var node yaml.Node
			err := dec.Decode(&node)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: not valid YAML: %v", file, err)
			}
			m := manifest{file: file, node: &node}
			if err := node.Decode(&m.header); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			all = append(all, m)
		}
	}
	return all
}

func find(t *testing.T, all []manifest, file, kind, name string) manifest {
	t.Helper()
	for _, m := range all {
		if m.file == file && m.Kind == kind && m.Metadata.Name == name {
			return m
		}
	}
	t.Fatalf("%s: no %s %q", file, kind, name)
	return manifest{}
}

// clusterScoped are the kinds without a namespace.
var clusterScoped = map[string]bool{"Namespace": true, "ClusterIssuer": true, "Kustomization": true}

// TestManifestsAreWellFormed: every document names its API version, kind,
// name and (unless cluster-scoped) namespace, and kustomization.yaml lists
// every voter manifest.
func TestManifestsAreWellFormed(t *testing.T) {
	all := loadManifests(t)
	for _, m := range all {
		if m.APIVersion == "" || m.Kind == "" {
			t.Errorf("%s: a document without apiVersion or kind", m.file)
			continue
		}
		if m.Kind == "Kustomization" {
			continue
		}
		if m.Metadata.Name == "" {
			t.Errorf("%s: %s without metadata.name", m.file, m.Kind)
		}
		if !clusterScoped[m.Kind] && m.Metadata.Namespace == "" {
			t.Errorf("%s: %s %s without metadata.namespace", m.file, m.Kind, m.Metadata.Name)
		}
	}

	var kustomization struct {
		Namespace string   `yaml:"namespace"`
		Resources []string `yaml:"resources"`
	}
	find(t, all, "kustomization.yaml", "Kustomization", "").decode(t, &kustomization)
	files, _ := filepath.Glob("*.yaml")
	var want []string
	for _, f := range files {
		// The sidecar belongs to applications, postgres.yaml to the database;
		// the ClusterIssuer is cluster-scoped and applied on its own.
		if f != "kustomization.yaml" && f != "sidecar.yaml" && f != "sidecar-deployment.yaml" && f != "postgres.yaml" && f != "clusterissuer.yaml" {
			want = append(want, f)
		}
	}
	got := slices.Sorted(slices.Values(kustomization.Resources))
	if !slices.Equal(got, want) {
		t.Errorf("kustomization.yaml resources %v, want %v", got, want)
	}
	for _, m := range all {
		if m.file != "sidecar.yaml" && m.file != "sidecar-deployment.yaml" && !clusterScoped[m.Kind] && m.Metadata.Namespace != kustomization.Namespace {
			t.Errorf("%s: %s in namespace %q, kustomization says %q", m.file, m.Kind, m.Metadata.Namespace, kustomization.Namespace)
		}
	}
}

// TestVoters builds the configuration of each voter pod and checks it against
// the StatefulSet, its Services, Secret and PodDisruptionBudget.
func TestVoters(t *testing.T) {
	all := loadManifests(t)
	var sts statefulSet
	stsM := find(t, all, "statefulset.yaml", "StatefulSet", "pgquorum")
	stsM.decode(t, &sts)
	spec := sts.Spec
	ns := stsM.Metadata.Namespace

	if spec.Replicas != 3 {
		t.Errorf("replicas %d, want 3 voters", spec.Replicas)
	}
	if spec.Ordinals.Start < 1 {
		t.Errorf("ordinals.start %d: node ids are the ordinals and must be non-zero", spec.Ordinals.Start)
	}
	if spec.PodManagementPolicy != "Parallel" {
		t.Errorf("podManagementPolicy %q: voters must start together to form a quorum", spec.PodManagementPolicy)
	}
	if spec.Retention.WhenDeleted != "Retain" || spec.Retention.WhenScaled != "Retain" {
		t.Errorf("persistentVolumeClaimRetentionPolicy %+v: Raft logs must be retained", spec.Retention)
	}
	podLabels := spec.Template.Metadata.Labels
	checkSelects(t, "StatefulSet selector", spec.Selector.MatchLabels, podLabels)
	pod := spec.Template.Spec
	if !pod.SecurityContext.RunAsNonRoot || pod.SecurityContext.FSGroup == 0 {
		t.Errorf("pod securityContext %+v: want runAsNonRoot and an fsGroup", pod.SecurityContext)
	}
	c := onlyContainer(t, pod.Containers, "pgquorum")
	configPath := configArg(t, c)

	var cm configMap
	find(t, all, "configmap.yaml", "ConfigMap", volumeByName(t, pod, mountFor(t, c, filepath.Dir(configPath))).ConfigMap.Name).decode(t, &cm)
	yamlText, ok := cm.Data[filepath.Base(configPath)]
	if !ok {
		t.Fatalf("ConfigMap has no key %s", filepath.Base(configPath))
	}

	// The headless Service gives the peers their DNS names.
	var headless service
	find(t, all, "services.yaml", "Service", spec.ServiceName).decode(t, &headless)
	if headless.Spec.ClusterIP != "None" || !headless.Spec.PublishNotReadyAddresses {
		t.Errorf("Service %s: want clusterIP None and publishNotReadyAddresses (Raft needs the names before readiness)", spec.ServiceName)
	}
	checkSelects(t, "Service "+spec.ServiceName, headless.Spec.Selector, podLabels)

	var clients service
	find(t, all, "services.yaml", "Service", "pgquorum").decode(t, &clients)
	checkSelects(t, "Service pgquorum", clients.Spec.Selector, podLabels)
	if len(clients.Spec.Ports) != 1 || clients.Spec.Ports[0].Port != 6432 || clients.Spec.Ports[0].TargetPort != "postgres" {
		t.Errorf("Service pgquorum ports %+v: want 6432 -> postgres", clients.Spec.Ports)
	}
	var admin service
	find(t, all, "services.yaml", "Service", "pgquorum-admin").decode(t, &admin)
	checkSelects(t, "Service pgquorum-admin", admin.Spec.Selector, podLabels)

	var pdb podDisruptionBudget
	find(t, all, "poddisruptionbudget.yaml", "PodDisruptionBudget", "pgquorum").decode(t, &pdb)
	if pdb.Spec.MaxUnavailable != 1 {
		t.Errorf("PodDisruptionBudget maxUnavailable %d, want 1", pdb.Spec.MaxUnavailable)
	}
	checkSelects(t, "PodDisruptionBudget", pdb.Spec.Selector.MatchLabels, podLabels)

	var secrets secret
	secretVolume := volumeByName(t, pod, "secrets")
	find(t, all, "secret.yaml", "Secret", secretVolume.Secret.SecretName).decode(t, &secrets)

	var first *config.Config
	for ordinal := spec.Ordinals.Start; ordinal < spec.Ordinals.Start+spec.Replicas; ordinal++ {
		podName := fmt.Sprintf("%s-%d", stsM.Metadata.Name, ordinal)
		env := podEnv(t, c, podFacts{name: podName, ip: "10.0.0.1", labels: withPodIndex(podLabels, ordinal)})
		cfg := podConfig(t, podName, yamlText, env)
		if cfg.Node.ID != uint64(ordinal) {
			t.Errorf("%s: node.id %d, want its ordinal %d", podName, cfg.Node.ID, ordinal)
		}
		if !cfg.Node.IsVoter() {
			t.Errorf("%s: not a voter", podName)
		}
		checkClusterLabel(t, podName, podLabels, cfg)
		checkMetricsPort(t, podName, spec.Template.Metadata.Annotations, c, "admin")
		checkListenPort(t, podName, c, "listen.postgres", cfg.Listen.Postgres, "postgres")
		checkListenPort(t, podName, c, "listen.admin", cfg.Listen.Admin, "admin")
		checkListenPort(t, podName, c, "listen.raft", cfg.Listen.Raft, "raft")
		checkProbes(t, podName, c, "admin", false)
		checkFiles(t, podName, pod, claimNames(sts), c, cfg, secrets)
		checkPeerTLS(t, podName, all, "certificates.yaml", pod, c, cfg)
		if first == nil {
			first = cfg
		}
	}

	// Every voter is a peer under its stable DNS name, and nothing else is.
	raftPort := containerPort(t, c, "raft")
	var wantPeers []config.Peer
	for ordinal := spec.Ordinals.Start; ordinal < spec.Ordinals.Start+spec.Replicas; ordinal++ {
		wantPeers = append(wantPeers, config.Peer{
			ID:   uint64(ordinal),
			Raft: fmt.Sprintf("%s-%d.%s.%s.svc:%d", stsM.Metadata.Name, ordinal, spec.ServiceName, ns, raftPort),
		})
	}
	if !slices.Equal(first.Peers, wantPeers) {
		t.Errorf("peers %+v, want %+v", first.Peers, wantPeers)
	}
	for _, p := range headless.Spec.Ports {
		if p.Port != raftPort {
			t.Errorf("Service %s port %d, but Raft listens on %d", spec.ServiceName, p.Port, raftPort)
		}
	}
}

// TestSidecar renders the sidecar's configuration with the init container's
// own script (run by /bin/sh) and checks it: a learner with a unique id on
// loopback, following the same voters and backends as the voters' config.
func TestSidecar(t *testing.T) {
	all := loadManifests(t)
	var sts statefulSet
	stsM := find(t, all, "sidecar.yaml", "StatefulSet", "my-app")
	stsM.decode(t, &sts)
	pod := sts.Spec.Template.Spec
	if sts.Spec.Retention.WhenDeleted != "Retain" || sts.Spec.Retention.WhenScaled != "Retain" {
		t.Errorf("persistentVolumeClaimRetentionPolicy %+v: an id must keep its Raft log", sts.Spec.Retention)
	}
	idInit := onlyContainer(t, pod.InitContainers, "pgquorum-id")
	sidecar := onlyContainer(t, pod.InitContainers, "pgquorum")
	if sidecar.RestartPolicy != "Always" {
		t.Errorf("sidecar restartPolicy %q, want Always (a native sidecar)", sidecar.RestartPolicy)
	}
	if slices.IndexFunc(pod.InitContainers, func(c container) bool { return c.Name == "pgquorum-id" }) >
		slices.IndexFunc(pod.InitContainers, func(c container) bool { return c.Name == "pgquorum" }) {
		t.Error("the id init container must run before the sidecar")
	}
	configPath := configArg(t, sidecar)

	// The template comes from the ConfigMap mounted into the init container;
	// the rendered file lands in an emptyDir the sidecar mounts at its
	// config dir, at the same path in both containers.
	templateDir, templateFile := "", filepath.Base(configPath)
	var template string
	for _, m := range idInit.VolumeMounts {
		if v := volumeByName(t, pod, m.Name); v.ConfigMap != nil {
			templateDir = m.MountPath
			var cm configMap
			find(t, all, "sidecar.yaml", "ConfigMap", v.ConfigMap.Name).decode(t, &cm)
			var ok bool
			if template, ok = cm.Data[templateFile]; !ok {
				t.Fatalf("ConfigMap %s has no key %s", v.ConfigMap.Name, templateFile)
			}
		}
	}
	if templateDir == "" {
		t.Fatal("pgquorum-id mounts no ConfigMap")
	}
	configDir := filepath.Dir(configPath)
	renderedVolume := mountFor(t, sidecar, configDir)
	if volumeByName(t, pod, renderedVolume).EmptyDir == nil || mountPathOf(t, idInit, renderedVolume) != configDir {
		t.Fatalf("the sidecar's config dir must be an emptyDir that pgquorum-id writes at the same path")
	}

	// The voters' configuration, for comparison.
	var voterCM configMap
	find(t, all, "configmap.yaml", "ConfigMap", "pgquorum-config").decode(t, &voterCM)
	voters, err := config.Parse([]byte(voterCM.Data["pgquorum.yaml"]))
	if err != nil {
		t.Fatal(err)
	}

	seen := map[uint64]string{}
	for ordinal := 0; ordinal < sts.Spec.Replicas; ordinal++ {
		podName := fmt.Sprintf("%s-%d", stsM.Metadata.Name, ordinal)
		facts := podFacts{name: podName, ip: "10.1.2.3", labels: withPodIndex(sts.Spec.Template.Metadata.Labels, ordinal)}
		rendered := runIDScript(t, idInit, podEnv(t, idInit, facts), templateDir, configDir, template, templateFile)
		cfg := podConfig(t, podName, rendered, podEnv(t, sidecar, facts))
		if other, dup := seen[cfg.Node.ID]; dup {
			t.Errorf("%s and %s both have node.id %d", other, podName, cfg.Node.ID)
		}
		seen[cfg.Node.ID] = podName
		for _, p := range voters.Peers {
			if p.ID == cfg.Node.ID {
				t.Errorf("%s: node.id %d is a voter's id", podName, cfg.Node.ID)
			}
		}
		checkClusterLabel(t, podName, sts.Spec.Template.Metadata.Labels, cfg)
		checkMetricsPort(t, podName, sts.Spec.Template.Metadata.Annotations, sidecar, "pgq-admin")
		if cfg.Node.IsVoter() {
			t.Errorf("%s: the sidecar must be a learner (node.voter: false)", podName)
		}
		if cfg.Listen.Postgres != "127.0.0.1:6432" {
			t.Errorf("%s: listen.postgres %s, want 127.0.0.1:6432", podName, cfg.Listen.Postgres)
		}
		if want := fmt.Sprintf("%s:%d", facts.ip, containerPort(t, sidecar, "pgq-raft")); cfg.Listen.Raft != want {
			t.Errorf("%s: listen.raft %s, want %s (the leader dials the learner's advertised address)", podName, cfg.Listen.Raft, want)
		}
		checkListenPort(t, podName, sidecar, "listen.admin", cfg.Listen.Admin, "pgq-admin")
		checkProbes(t, podName, sidecar, "pgq-admin", true)
		checkFiles(t, podName, pod, claimNames(sts), sidecar, cfg, secret{})
		if cfg.Auth.Lookup != config.LookupVoters || cfg.Auth.QueryPasswordFile != "" {
			t.Errorf("%s: a sidecar reads verifiers through the voters (auth.lookup: voters) and holds no database password", podName)
		}
		checkPeerTLS(t, podName, all, "sidecar.yaml", pod, sidecar, cfg)
		if cfg.Admin.TokenFile != "" {
			t.Errorf("%s: a sidecar needs no admin token (its admin API refuses calls that change the cluster)", podName)
		}
		if cfg.ClusterName != voters.ClusterName || !slices.Equal(cfg.Peers, voters.Peers) || !slices.Equal(cfg.Backends, voters.Backends) {
			t.Errorf("%s: cluster_name, peers or backends differ from the voters' configuration", podName)
		}
	}

	// A pod without an ordinal gets no id: the script fails.
	_, err = runIDScriptErr(idInit, podEnv(t, idInit, podFacts{name: "my-app", labels: map[string]string{}}),
		templateDir, configDir, template, templateFile, t.TempDir())
	if err == nil {
		t.Error("pgquorum-id accepted a pod name without an ordinal")
	}
}

// TestSidecarDeployment checks the sidecar of a Deployment: node.id: auto
// with a learner certificate for a block of ids, its id and log on an
// emptyDir (the pod's own), a native sidecar that starts the application once
// it routes, and the same cluster as the voters.
func TestSidecarDeployment(t *testing.T) {
	all := loadManifests(t)
	var d deployment
	dm := find(t, all, "sidecar-deployment.yaml", "Deployment", "my-api")
	dm.decode(t, &d)
	pod := d.Spec.Template.Spec
	checkSelects(t, "Deployment selector", d.Spec.Selector.MatchLabels, d.Spec.Template.Metadata.Labels)
	sidecar := onlyContainer(t, pod.InitContainers, "pgquorum")
	if sidecar.RestartPolicy != "Always" {
		t.Errorf("sidecar restartPolicy %q, want Always (a native sidecar)", sidecar.RestartPolicy)
	}
	configPath := configArg(t, sidecar)
	var cm configMap
	find(t, all, "sidecar-deployment.yaml", "ConfigMap", volumeByName(t, pod, mountFor(t, sidecar, filepath.Dir(configPath))).ConfigMap.Name).decode(t, &cm)
	var voterCM configMap
	find(t, all, "configmap.yaml", "ConfigMap", "pgquorum-config").decode(t, &voterCM)
	voters, err := config.Parse([]byte(voterCM.Data["pgquorum.yaml"]))
	if err != nil {
		t.Fatal(err)
	}

	podName := dm.Metadata.Name + "-7d9f8c6b5-x2x4q"
	facts := podFacts{name: podName, ip: "10.1.2.3", labels: d.Spec.Template.Metadata.Labels}
	cfg := podConfig(t, podName, cm.Data[filepath.Base(configPath)], podEnv(t, sidecar, facts))
	if !cfg.Node.AutoID || cfg.Node.IsVoter() {
		t.Errorf("node.id auto %v, voter %v: want a learner with node.id: auto", cfg.Node.AutoID, cfg.Node.IsVoter())
	}
	dataVolume := ""
	for _, m := range sidecar.VolumeMounts {
		if strings.HasPrefix(cfg.Node.DataDir, m.MountPath+"/") {
			dataVolume = m.Name
		}
	}
	if dataVolume == "" || volumeByName(t, pod, dataVolume).EmptyDir == nil {
		t.Errorf("node.data_dir %s is not on an emptyDir (volume %q): a Deployment's pods have none of their own", cfg.Node.DataDir, dataVolume)
	}
	if want := fmt.Sprintf("%s:%d", facts.ip, containerPort(t, sidecar, "pgq-raft")); cfg.Listen.Raft != want {
		t.Errorf("listen.raft %s, want %s (the leader dials the learner's advertised address)", cfg.Listen.Raft, want)
	}
	if cfg.Listen.Postgres != "127.0.0.1:6432" || cfg.Admin.TokenFile != "" {
		t.Errorf("listen.postgres %s, admin.token_file %q: want loopback and no token", cfg.Listen.Postgres, cfg.Admin.TokenFile)
	}
	checkListenPort(t, podName, sidecar, "listen.admin", cfg.Listen.Admin, "pgq-admin")
	checkProbes(t, podName, sidecar, "pgq-admin", true)
	if p := sidecar.StartupProbe; p != nil && p.PeriodSeconds*p.FailureThreshold < 60 {
		t.Errorf("startupProbe gives the sidecar %d s to route, want a minute or more", p.PeriodSeconds*p.FailureThreshold)
	}
	checkPeerTLS(t, podName, all, "sidecar-deployment.yaml", pod, sidecar, cfg)
	checkClusterLabel(t, podName, d.Spec.Template.Metadata.Labels, cfg)
	checkMetricsPort(t, podName, d.Spec.Template.Metadata.Annotations, sidecar, "pgq-admin")
	if cfg.ClusterName != voters.ClusterName || !slices.Equal(cfg.Peers, voters.Peers) || !slices.Equal(cfg.Backends, voters.Backends) {
		t.Errorf("cluster_name, peers or backends differ from the voters' configuration")
	}
	if cfg.Auth.Lookup != config.LookupVoters || cfg.Auth.QueryPasswordFile != "" {
		t.Errorf("a sidecar reads verifiers through the voters (auth.lookup: voters) and holds no database password")
	}
}
