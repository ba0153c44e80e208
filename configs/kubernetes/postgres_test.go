package kubernetes_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pgquorum/pgquorum/config"
)

// The fields of postgres.yaml's pod that k8s_types_test.go does not decode.
type agentPodExtras struct {
	Spec struct {
		Template struct {
			Spec struct {
				ShareProcessNamespace bool `yaml:"shareProcessNamespace"`
				SecurityContext       struct {
					RunAsUser int `yaml:"runAsUser"`
				} `yaml:"securityContext"`
				Volumes []struct {
					Name   string `yaml:"name"`
					Secret *struct {
						SecretName string `yaml:"secretName"`
					} `yaml:"secret"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

// TestPostgresWithAgents checks postgres.yaml against the voters: every pod is
// the backend of configmap.yaml its agent says it is, at the address the
// voters dial; the agent's files exist in the mounted secrets; the data
// directory is a directory on the volume (a re-clone moves it aside); the
// PostgreSQL settings hold the prerequisites the agent checks; and the init
// script is valid shell.
func TestPostgresWithAgents(t *testing.T) {
	all := loadManifests(t)
	var sts statefulSet
	stsM := find(t, all, "postgres.yaml", "StatefulSet", "pg")
	stsM.decode(t, &sts)
	var extras agentPodExtras
	stsM.decode(t, &extras)
	ns := stsM.Metadata.Namespace
	pod := sts.Spec.Template.Spec
	podLabels := sts.Spec.Template.Metadata.Labels
	checkSelects(t, "StatefulSet pg selector", sts.Spec.Selector.MatchLabels, podLabels)
	if sts.Spec.Replicas != 3 || sts.Spec.PodManagementPolicy != "Parallel" {
		t.Errorf("replicas %d, podManagementPolicy %q: want 3 nodes started together", sts.Spec.Replicas, sts.Spec.PodManagementPolicy)
	}
	if sts.Spec.Retention.WhenDeleted != "Retain" || sts.Spec.Retention.WhenScaled != "Retain" {
		t.Errorf("persistentVolumeClaimRetentionPolicy %+v: the databases must be retained", sts.Spec.Retention)
	}
	if !extras.Spec.Template.Spec.ShareProcessNamespace {
		t.Error("shareProcessNamespace must be true: the pause container reaps what the agent leaves behind (the agent is not PID 1)")
	}
	if !pod.SecurityContext.RunAsNonRoot || extras.Spec.Template.Spec.SecurityContext.RunAsUser == 0 {
		t.Error("the pod must run as the data directory's owner, not root")
	}

	var headless service
	find(t, all, "postgres.yaml", "Service", sts.Spec.ServiceName).decode(t, &headless)
	if headless.Spec.ClusterIP != "None" || !headless.Spec.PublishNotReadyAddresses {
		t.Errorf("Service %s: want clusterIP None and publishNotReadyAddresses (the proxies probe nodes that are not ready)", sts.Spec.ServiceName)
	}
	checkSelects(t, "Service "+sts.Spec.ServiceName, headless.Spec.Selector, podLabels)

	// The voters' side.
	var voterCM configMap
	find(t, all, "configmap.yaml", "ConfigMap", "pgquorum-config").decode(t, &voterCM)
	voters, err := config.Parse([]byte(voterCM.Data["pgquorum.yaml"]))
	if err != nil {
		t.Fatal(err)
	}
	var voterSts statefulSet
	voterM := find(t, all, "statefulset.yaml", "StatefulSet", "pgquorum")
	voterM.decode(t, &voterSts)
	voterAdminPort := containerPort(t, onlyContainer(t, voterSts.Spec.Template.Spec.Containers, "pgquorum"), "admin")
	var wantAdmin []string
	for ordinal := voterSts.Spec.Ordinals.Start; ordinal < voterSts.Spec.Ordinals.Start+voterSts.Spec.Replicas; ordinal++ {
		wantAdmin = append(wantAdmin, fmt.Sprintf("%s-%d.%s.%s.svc:%d", voterM.Metadata.Name, ordinal, voterSts.Spec.ServiceName, ns, voterAdminPort))
	}

	secrets := map[string]secret{}
	for _, m := range all {
		if m.Kind == "Secret" && m.Metadata.Namespace == ns { // sidecar.yaml has a Secret of that name in the application's namespace
			var s secret
			m.decode(t, &s)
			secrets[m.Metadata.Name] = s
		}
	}
	agent := onlyContainer(t, pod.Containers, "postgres")
	dataMount := mountPathOf(t, agent, "data")
	pgPort := containerPort(t, agent, "postgres")
	for ordinal := 0; ordinal < sts.Spec.Replicas; ordinal++ {
		podName := fmt.Sprintf("%s-%d", stsM.Metadata.Name, ordinal)
		env := podEnv(t, agent, podFacts{name: podName, ip: "10.0.0.9", labels: withPodIndex(podLabels, ordinal)})
		flags := agentArgs(t, podName, agent.Args, env)

		pgdata := flags["pgdata"]
		if rel, err := filepath.Rel(dataMount, pgdata); err != nil || rel == "." || strings.HasPrefix(rel, "..") {
			t.Errorf("%s: --pgdata %s must be a directory inside the volume mounted at %s, not the mount point", podName, pgdata, dataMount)
		}
		node := flags["node"]
		want := fmt.Sprintf("%s.%s.%s.svc:%d", podName, sts.Spec.ServiceName, ns, pgPort)
		if i := slices.IndexFunc(voters.Backends, func(b config.Backend) bool { return b.Name == node }); i < 0 || voters.Backends[i].Address != want {
			t.Errorf("%s: --node %s must be the voters' backend at %s (backends %+v)", podName, node, want, voters.Backends)
		}
		if got := strings.Split(flags["admin"], ","); !slices.Equal(got, wantAdmin) {
			t.Errorf("%s: --admin %q, want every voter's admin API %q", podName, got, wantAdmin)
		}
		for _, f := range []string{"token-file", "source-password-file", "replication-password-file"} {
			checkSecretFile(t, podName, "--"+f, flags[f], agent, extras, secrets)
		}
		if _, ok := flags["reclone-fallback"]; !ok {
			t.Errorf("%s: without --reclone-fallback an empty volume is never filled", podName)
		}
	}

	var cm configMap
	find(t, all, "postgres.yaml", "ConfigMap", "pg-config").decode(t, &cm)
	settings := cm.Data["pgquorum.conf"]
	for _, want := range []string{"wal_log_hints = on", "wal_keep_size = '1GB'", "hot_standby = on", "wal_level = replica",
		fmt.Sprintf("port = %d", pgPort)} {
		if !strings.Contains(settings, want) {
			t.Errorf("pgquorum.conf lacks %q (a prerequisite of the agent)", want)
		}
	}
	if !strings.Contains(cm.Data["pg_hba.conf"], "host  replication replicator") {
		t.Error("pg_hba.conf has no replication line for the replicator role")
	}

	// The init script: valid shell, run with the paths it uses mounted.
	script := cm.Data["init.sh"]
	path := filepath.Join(t.TempDir(), "init.sh")
	if err := os.WriteFile(path, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("/bin/sh", "-n", path).CombinedOutput(); err != nil {
		t.Fatalf("init.sh is not valid shell: %v\n%s", err, out)
	}
	init := onlyContainer(t, pod.InitContainers, "pg-init")
	for _, p := range []string{"/etc/pg-config/pgquorum.conf", "/etc/pg-config/pg_hba.conf", "/etc/pg-secrets/postgres-password",
		"/etc/pgquorum-secrets/query-password", "/etc/pg-secrets/replicator-password"} {
		if !strings.Contains(script, p) {
			t.Errorf("init.sh does not use %s", p)
		}
		checkSecretOrConfigPath(t, p, init, extras, secrets, cm)
	}
	if len(init.Command) != 2 || init.Command[1] != "/etc/pg-config/init.sh" {
		t.Errorf("pg-init runs %q, want /bin/sh /etc/pg-config/init.sh", init.Command)
	}
}

// agentArgs resolves $(VAR) in the agent's arguments as the kubelet does and
// returns its --flag=value pairs (a flag without a value maps to "").
func agentArgs(t *testing.T, podName string, args []string, env map[string]string) map[string]string {
	t.Helper()
	if len(args) == 0 || args[0] != "agent" {
		t.Fatalf("%s: args %q, want agent ...", podName, args)
	}
	flags := map[string]string{}
	for _, a := range args[1:] {
		a = dependentVar.ReplaceAllStringFunc(a, func(ref string) string {
			v, ok := env[dependentVar.FindStringSubmatch(ref)[1]]
			if !ok {
				t.Errorf("%s: %s refers to an unset variable", podName, ref)
			}
			return v
		})
		name, value, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		flags[name] = value
	}
	return flags
}

// checkSecretFile checks that path is a key of a Secret the container mounts.
func checkSecretFile(t *testing.T, podName, flag, path string, c container, extras agentPodExtras, secrets map[string]secret) {
	t.Helper()
	if path == "" {
		t.Errorf("%s: no %s", podName, flag)
		return
	}
	checkSecretOrConfigPath(t, path, c, extras, secrets, configMap{})
}

func checkSecretOrConfigPath(t *testing.T, path string, c container, extras agentPodExtras, secrets map[string]secret, cm configMap) {
	t.Helper()
	dir, key := filepath.Dir(path), filepath.Base(path)
	volume := ""
	for _, m := range c.VolumeMounts {
		if m.MountPath == dir {
			volume = m.Name
		}
	}
	if volume == "" {
		t.Errorf("container %s mounts nothing at %s (for %s)", c.Name, dir, path)
		return
	}
	for _, v := range extras.Spec.Template.Spec.Volumes {
		if v.Name != volume {
			continue
		}
		if v.Secret == nil {
			if _, ok := cm.Data[key]; !ok {
				t.Errorf("%s: volume %s is not a Secret, and the ConfigMap has no key %s", path, volume, key)
			}
			return
		}
		s, ok := secrets[v.Secret.SecretName]
		if !ok {
			t.Errorf("%s: Secret %s is not defined in these manifests", path, v.Secret.SecretName)
			return
		}
		if _, ok := s.StringData[key]; !ok {
			t.Errorf("%s: Secret %s has no key %s", path, v.Secret.SecretName, key)
		}
		return
	}
	t.Errorf("%s: no volume %s", path, volume)
}
