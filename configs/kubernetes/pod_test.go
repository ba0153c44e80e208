package kubernetes_test

// Helpers that play the kubelet's part: a pod's environment, its pgquorum
// configuration, the init container's script, and lookups in pod specs.

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/pgquorum/pgquorum/config"
	"github.com/pgquorum/pgquorum/pki"
)

// podFacts are what the downward API would give a pod.
type podFacts struct {
	name   string
	ip     string
	labels map[string]string
}

func withPodIndex(labels map[string]string, ordinal int) map[string]string {
	out := map[string]string{"apps.kubernetes.io/pod-index": strconv.Itoa(ordinal)}
	for k, v := range labels {
		out[k] = v
	}
	return out
}

var (
	labelFieldPath = regexp.MustCompile(`^metadata\.labels\['([^']+)'\]$`)
	dependentVar   = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
)

// podEnv resolves a container's environment as the kubelet does: downward
// API fields, resource limits, and $(VAR) references to earlier variables.
func podEnv(t *testing.T, c container, pod podFacts) map[string]string {
	t.Helper()
	env := map[string]string{}
	overrides := map[string]bool{}
	for _, o := range config.EnvOverrides {
		overrides[o.Env] = true
	}
	for _, e := range c.Env {
		if strings.HasPrefix(e.Name, "PGQUORUM_") && !overrides[e.Name] && e.Name != "PGQUORUM_ID_BASE" {
			t.Errorf("container %s: %s is not an environment override pgquorum knows", c.Name, e.Name)
		}
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = dependentVar.ReplaceAllStringFunc(e.Value, func(ref string) string {
				name := dependentVar.FindStringSubmatch(ref)[1]
				if v, ok := env[name]; ok {
					return v
				}
				return ref // Kubernetes leaves unknown references as they are
			})
		case e.ValueFrom.FieldRef != nil:
			path := e.ValueFrom.FieldRef.FieldPath
			switch {
			case path == "metadata.name":
				env[e.Name] = pod.name
			case path == "status.podIP":
				env[e.Name] = pod.ip
			case labelFieldPath.MatchString(path):
				key := labelFieldPath.FindStringSubmatch(path)[1]
				v, ok := pod.labels[key]
				if !ok {
					t.Errorf("container %s: %s reads label %s, which the pod does not have", c.Name, e.Name, key)
				}
				env[e.Name] = v
			default:
				t.Errorf("container %s: %s: field %s not handled by this test", c.Name, e.Name, path)
			}
		case e.ValueFrom.ResourceFieldRef != nil:
			env[e.Name] = "268435456"
		default:
			t.Errorf("container %s: %s: unknown valueFrom", c.Name, e.Name)
		}
	}
	return env
}

// podConfig is what `pgquorum run` would load in the pod, short of reading
// the secret files: Parse, the environment overrides, Validate.
func podConfig(t *testing.T, podName, yamlText string, env map[string]string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(yamlText))
	if err != nil {
		t.Fatalf("%s: %v", podName, err)
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	if err := config.ApplyEnv(cfg, lookup); err != nil {
		t.Fatalf("%s: %v", podName, err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("%s: %v", podName, err)
	}
	return cfg
}

// runIDScript runs the init container's shell script with its mount paths
// moved into temporary directories and returns the configuration it wrote.
func runIDScript(t *testing.T, c container, env map[string]string, templateDir, configDir, template, file string) string {
	t.Helper()
	out, err := runIDScriptErr(c, env, templateDir, configDir, template, file, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func runIDScriptErr(c container, env map[string]string, templateDir, configDir, template, file, tmp string) (string, error) {
	if len(c.Command) != 3 || c.Command[0] != "sh" || c.Command[1] != "-c" {
		return "", fmt.Errorf("container %s: command %q is not sh -c SCRIPT", c.Name, c.Command)
	}
	tmplDir := filepath.Join(tmp, "template")
	outDir := filepath.Join(tmp, "config")
	for _, d := range []string{tmplDir, outDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", err
		}
	}
	if err := os.WriteFile(filepath.Join(tmplDir, file), []byte(template), 0o644); err != nil {
		return "", err
	}
	script := strings.ReplaceAll(c.Command[2], templateDir+"/", tmplDir+"/")
	script = strings.ReplaceAll(script, configDir+"/", outDir+"/")
	// Never let the script touch the machine's real paths.
	if strings.Contains(script, templateDir) || strings.Contains(script, configDir) || strings.Contains(script, " /etc/") {
		return "", fmt.Errorf("container %s: script uses paths other than its mounts:\n%s", c.Name, c.Command[2])
	}
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("pgquorum-id script: %v: %s", err, out)
	}
	data, err := os.ReadFile(filepath.Join(outDir, file))
	return string(data), err
}

func onlyContainer(t *testing.T, cs []container, name string) container {
	t.Helper()
	for _, c := range cs {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %s", name)
	return container{}
}

// configArg returns the --config argument of `pgquorum run`.
func configArg(t *testing.T, c container) string {
	t.Helper()
	i := slices.Index(c.Args, "--config")
	if len(c.Args) == 0 || c.Args[0] != "run" || i < 0 || i+1 >= len(c.Args) {
		t.Fatalf("container %s: args %q, want run --config FILE", c.Name, c.Args)
	}
	return c.Args[i+1]
}

func volumeByName(t *testing.T, pod podSpec, name string) volume {
	t.Helper()
	for _, v := range pod.Volumes {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("no volume %s", name)
	return volume{}
}

// mountFor returns the volume mounted exactly at path.
func mountFor(t *testing.T, c container, path string) string {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if m.MountPath == path {
			return m.Name
		}
	}
	t.Fatalf("container %s mounts nothing at %s", c.Name, path)
	return ""
}

func mountPathOf(t *testing.T, c container, volumeName string) string {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if m.Name == volumeName {
			return m.MountPath
		}
	}
	t.Fatalf("container %s does not mount %s", c.Name, volumeName)
	return ""
}

func containerPort(t *testing.T, c container, name string) int {
	t.Helper()
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	t.Fatalf("container %s has no port %s", c.Name, name)
	return 0
}

func checkListenPort(t *testing.T, podName string, c container, key, addr, portName string) {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Errorf("%s: %s %q: %v", podName, key, addr, err)
		return
	}
	if want := strconv.Itoa(containerPort(t, c, portName)); port != want {
		t.Errorf("%s: %s port %s, but container port %s is %s", podName, key, port, portName, want)
	}
}

// checkProbes: a voter is ready while /readyz says so; a sidecar starts its
// application once /readyz says so and then leaves readiness to the
// application (README.md, "Sidecar readiness"); both are alive while
// /healthz answers.
func checkProbes(t *testing.T, podName string, c container, adminPort string, sidecar bool) {
	t.Helper()
	readiness := c.ReadinessProbe
	if sidecar {
		readiness = c.StartupProbe
		if c.ReadinessProbe != nil {
			t.Errorf("%s: the sidecar has a readinessProbe: a database failover would take every application pod out of its Services", podName)
		}
	}
	if readiness == nil || readiness.HTTPGet.Path != "/readyz" || readiness.HTTPGet.Port != adminPort {
		t.Errorf("%s: readiness (startup for a sidecar) probe %+v, want GET /readyz on %s", podName, readiness, adminPort)
	}
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" || c.LivenessProbe.HTTPGet.Port != adminPort {
		t.Errorf("%s: livenessProbe %+v, want GET /healthz on %s", podName, c.LivenessProbe, adminPort)
	}
}

// checkFiles: data_dir lies on a PersistentVolume claim template, and the
// secret files are keys of the mounted Secret.
func checkFiles(t *testing.T, podName string, pod podSpec, claims []string, c container, cfg *config.Config, s secret) {
	t.Helper()
	dataVolume := ""
	for _, m := range c.VolumeMounts {
		if strings.HasPrefix(cfg.Node.DataDir, m.MountPath+"/") {
			dataVolume = m.Name
		}
	}
	if dataVolume == "" {
		t.Errorf("%s: node.data_dir %s is on no volume", podName, cfg.Node.DataDir)
	} else if !slices.Contains(claims, dataVolume) {
		t.Errorf("%s: node.data_dir is on volume %s, not a volumeClaimTemplate: the Raft log would die with the pod", podName, dataVolume)
	}
	secretFiles := map[string]string{}
	if cfg.Auth.Lookup != config.LookupVoters {
		secretFiles["auth.query_password_file"] = cfg.Auth.QueryPasswordFile
	}
	if cfg.Node.IsVoter() {
		secretFiles["admin.token_file"] = cfg.Admin.TokenFile
	}
	for key, path := range secretFiles {
		if path == "" {
			t.Errorf("%s: %s not set", podName, key)
			continue
		}
		v := volumeByName(t, pod, mountFor(t, c, filepath.Dir(path)))
		if v.Secret == nil {
			t.Errorf("%s: %s %s is not on a Secret volume", podName, key, path)
			continue
		}
		if _, ok := s.StringData[filepath.Base(path)]; !ok {
			t.Errorf("%s: %s: Secret has no key %s", podName, key, filepath.Base(path))
		}
	}
}

// checkPeerTLS: the peer_tls files come from the Secrets of cert-manager
// Certificates (in certFile) issued by the ClusterIssuer of
// clusterissuer.yaml, and the certificate is this node's: its URI SAN is a
// pgquorum identity of the cluster that covers node.id with the node's role.
func checkPeerTLS(t *testing.T, podName string, all []manifest, certFile string, pod podSpec, c container, cfg *config.Config) {
	t.Helper()
	if cfg.PeerTLS == nil {
		t.Errorf("%s: no peer_tls (the proxies must talk over mutual TLS)", podName)
		return
	}
	var issuerName string
	for _, m := range all {
		if m.file == "clusterissuer.yaml" && m.Kind == "ClusterIssuer" {
			issuerName = m.Metadata.Name
		}
	}
	source := map[string][2]string{} // which Secret and key each file comes from
	for key, path := range map[string]string{"ca": cfg.PeerTLS.CA, "cert": cfg.PeerTLS.Cert, "key": cfg.PeerTLS.Key} {
		secretName, secretKey := secretFile(t, pod, mountFor(t, c, filepath.Dir(path)), filepath.Base(path))
		if secretName == "" {
			t.Errorf("%s: peer_tls.%s %s is in no Secret", podName, key, path)
			return
		}
		source[key] = [2]string{secretName, secretKey}
	}
	want := map[string]string{"ca": "ca.crt", "cert": "tls.crt", "key": "tls.key"}
	for key, k := range want {
		if source[key][1] != k {
			t.Errorf("%s: peer_tls.%s is the Secret's key %q, want cert-manager's %q", podName, key, source[key][1], k)
		}
	}
	if source["cert"][0] != source["key"][0] {
		t.Errorf("%s: peer_tls.cert and key come from different Secrets", podName)
	}
	var cert certificate
	found := false
	for _, m := range all {
		if m.file == certFile && m.Kind == "Certificate" {
			var c certificate
			m.decode(t, &c)
			if c.Spec.SecretName == source["cert"][0] {
				cert, found = c, true
			}
		}
	}
	if !found {
		t.Errorf("%s: no Certificate in %s writes Secret %s", podName, certFile, source["cert"][0])
		return
	}
	if cert.Spec.IssuerRef.Kind != "ClusterIssuer" || cert.Spec.IssuerRef.Name != issuerName || issuerName == "" {
		t.Errorf("%s: Certificate issuer %+v, want the ClusterIssuer %q of clusterissuer.yaml", podName, cert.Spec.IssuerRef, issuerName)
	}
	if len(cert.Spec.URIs) != 1 {
		t.Errorf("%s: Certificate URIs %v, want one pgquorum identity", podName, cert.Spec.URIs)
		return
	}
	id, err := pki.ParseIdentity(cert.Spec.URIs[0])
	role := pki.RoleLearner
	if cfg.Node.IsVoter() {
		role = pki.RoleVoter
	}
	switch {
	case err != nil:
		t.Errorf("%s: %v", podName, err)
	case cfg.Node.AutoID && (id.Cluster != cfg.ClusterName || id.Role != pki.RoleLearner):
		t.Errorf("%s: node.id: auto needs a learner certificate of cluster %q, not %s", podName, cfg.ClusterName, id)
	case cfg.Node.AutoID && id.LastID-id.FirstID+1 < 1_000_000_000:
		t.Errorf("%s: node.id: auto draws from the block %s: with fewer than a billion ids, two pods may draw the same one (configs/README.md, \"Sidecar ids\")", podName, id.IDs())
	case !cfg.Node.AutoID && (id.Cluster != cfg.ClusterName || !id.Covers(cfg.Node.ID) || id.Role != role):
		t.Errorf("%s: certificate identity %s is not node %d (%s) of cluster %q", podName, id, cfg.Node.ID, role, cfg.ClusterName)
	}
	for _, usage := range []string{"server auth", "client auth"} {
		if !slices.Contains(cert.Spec.Usages, usage) {
			t.Errorf("%s: Certificate usages %v lack %q (peers are servers and clients)", podName, cert.Spec.Usages, usage)
		}
	}
	if cert.Spec.PrivateKey.Algorithm != "ECDSA" {
		t.Errorf("%s: Certificate key algorithm %q, want ECDSA", podName, cert.Spec.PrivateKey.Algorithm)
	}
}

// secretFile says which Secret and key file lands as in the volume named
// volumeName ("" when the volume holds no Secrets).
func secretFile(t *testing.T, pod podSpec, volumeName, file string) (secretName, key string) {
	t.Helper()
	v := volumeByName(t, pod, volumeName)
	lookup := func(name string, items []keyToPath) bool {
		if len(items) == 0 {
			secretName, key = name, file // every key, under its own name
			return true
		}
		for _, it := range items {
			if it.Path == file {
				secretName, key = name, it.Key
				return true
			}
		}
		return false
	}
	switch {
	case v.Secret != nil:
		lookup(v.Secret.SecretName, v.Secret.Items)
	case v.Projected != nil:
		for _, s := range v.Projected.Sources {
			if s.Secret != nil && lookup(s.Secret.Name, s.Secret.Items) {
				break
			}
		}
	}
	return secretName, key
}

// checkSelects: every selector label is on the pods.
func checkSelects(t *testing.T, what string, selector, podLabels map[string]string) {
	t.Helper()
	if len(selector) == 0 {
		t.Errorf("%s: empty selector", what)
	}
	for k, v := range selector {
		if podLabels[k] != v {
			t.Errorf("%s: selects %s=%s, which the pods do not have", what, k, v)
		}
	}
}

func claimNames(sts statefulSet) []string {
	var names []string
	for _, c := range sts.Spec.VolumeClaimTemplates {
		names = append(names, c.Metadata.Name)
	}
	return names
}

// checkClusterLabel: the pod label that Prometheus turns into the "cluster"
// target label (configs/prometheus/prometheus.yml) names the pgquorum cluster.
func checkClusterLabel(t *testing.T, podName string, podLabels map[string]string, cfg *config.Config) {
	t.Helper()
	if got := podLabels["pgquorum.io/cluster"]; got != cfg.ClusterName {
		t.Errorf("%s: pod label pgquorum.io/cluster %q, want cluster_name %q", podName, got, cfg.ClusterName)
	}
}

// checkMetricsPort: the annotation Prometheus discovers pgquorum by names the
// admin port, where /metrics is served.
func checkMetricsPort(t *testing.T, podName string, annotations map[string]string, c container, adminPort string) {
	t.Helper()
	if got, want := annotations["pgquorum.io/metrics-port"], strconv.Itoa(containerPort(t, c, adminPort)); got != want {
		t.Errorf("%s: annotation pgquorum.io/metrics-port %q, want the admin port %s", podName, got, want)
	}
}
