// Package deploy holds fleet deployment examples. Its tests keep them in
// step with the daemon: the configs they ship must load, the Flatcar
// Ignition file must be what its Butane source says, and the Kubernetes
// DaemonSet must keep its privileges minimal. CI also runs
// ignition-validate and yamllint on them (make deploy-check).
package deploy

import (
	"bytes"
	"encoding/json"
	"flag"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/fabricd/fabricd/config"
)

var update = flag.Bool("update", false, "rewrite flatcar/fabricd.ign from flatcar/fabricd.bu")

// butane is the subset of Butane's flatcar 1.0.0 spec the example uses.
type butane struct {
	Variant string `yaml:"variant"`
	Version string `yaml:"version"`
	Storage struct {
		Files []struct {
			Path     string `yaml:"path"`
			Mode     int    `yaml:"mode"`
			Contents struct {
				Source string `yaml:"source"`
				Inline string `yaml:"inline"`
			} `yaml:"contents"`
		} `yaml:"files"`
	} `yaml:"storage"`
	Systemd struct {
		Units []struct {
			Name     string `yaml:"name"`
			Enabled  *bool  `yaml:"enabled"`
			Contents string `yaml:"contents"`
			Dropins  []struct {
				Name     string `yaml:"name"`
				Contents string `yaml:"contents"`
			} `yaml:"dropins"`
		} `yaml:"units"`
	} `yaml:"systemd"`
}

func readButane(t *testing.T) butane {
	t.Helper()
	src, err := os.ReadFile("flatcar/fabricd.bu")
	if err != nil {
		t.Fatal(err)
	}
	var b butane
	dec := yaml.NewDecoder(bytes.NewReader(src))
	dec.KnownFields(true)
	if err := dec.Decode(&b); err != nil {
		t.Fatalf("flatcar/fabricd.bu: %v", err)
	}
	if b.Variant != "flatcar" || b.Version != "1.0.0" {
		t.Fatalf("butane variant %q version %q", b.Variant, b.Version)
	}
	return b
}

// ignition renders b as Ignition 3.3.0, as butane does for flatcar 1.0.0
// (inline contents become percent-encoded data URLs).
func ignition(b butane) map[string]any {
	var files []any
	for _, f := range b.Storage.Files {
		source := f.Contents.Source
		if f.Contents.Inline != "" {
			source = "data:," + url.PathEscape(f.Contents.Inline)
		}
		files = append(files, map[string]any{
			"path":     f.Path,
			"mode":     f.Mode,
			"contents": map[string]any{"source": source},
		})
	}
	var units []any
	for _, u := range b.Systemd.Units {
		unit := map[string]any{"name": u.Name}
		if u.Enabled != nil {
			unit["enabled"] = *u.Enabled
		}
		if u.Contents != "" {
			unit["contents"] = u.Contents
		}
		var dropins []any
		for _, d := range u.Dropins {
			dropins = append(dropins, map[string]any{"name": d.Name, "contents": d.Contents})
		}
		if dropins != nil {
			unit["dropins"] = dropins
		}
		units = append(units, unit)
	}
	return map[string]any{
		"ignition": map[string]any{"version": "3.3.0"},
		"storage":  map[string]any{"files": files},
		"systemd":  map[string]any{"units": units},
	}
}

func TestFlatcarIgnitionMatchesButane(t *testing.T) {
	want, err := json.MarshalIndent(ignition(readButane(t)), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, '\n')
	if *update {
		if err := os.WriteFile("flatcar/fabricd.ign", want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile("flatcar/fabricd.ign")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("flatcar/fabricd.ign is not flatcar/fabricd.bu transpiled; run: go test ./deploy -update")
	}
}

// The Flatcar units are dist/'s with /opt/bin for the binaries (Flatcar's
// /usr is read-only): every directive they set must be dist's.
func TestFlatcarUnitsFollowDist(t *testing.T) {
	b := readButane(t)
	dist := map[string]string{
		"fabricd.service":             "../dist/fabricd.service",
		"fabricd-wait-online.service": "../dist/fabricd-wait-online.service",
	}
	for _, u := range b.Systemd.Units {
		path, ok := dist[u.Name]
		if !ok {
			continue
		}
		src, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		distLines := strings.Split(strings.NewReplacer("/usr/local/sbin/", "/opt/bin/", "/usr/local/bin/", "/opt/bin/").Replace(string(src)), "\n")
		for _, line := range strings.Split(u.Contents, "\n") {
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			if !slices.Contains(distLines, line) {
				t.Errorf("%s: %q is not in %s", u.Name, line, path)
			}
		}
	}
}

func TestShippedConfigsLoad(t *testing.T) {
	b := readButane(t)
	for _, f := range b.Storage.Files {
		if f.Path == "/etc/fabricd/fabricd.toml" {
			if _, err := config.Parse("flatcar:"+f.Path, []byte(f.Contents.Inline)); err != nil {
				t.Error(err)
			}
		}
	}
	for _, m := range kubernetesManifests(t) {
		if m["kind"] == "ConfigMap" {
			data := m["data"].(map[string]any)
			if _, err := config.Parse("kubernetes:fabricd.toml", []byte(data["fabricd.toml"].(string))); err != nil {
				t.Error(err)
			}
		}
	}
	src, err := os.ReadFile("../dist/fabricd.toml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := config.Parse("dist/fabricd.toml", src); err != nil {
		t.Error(err)
	}
}

func kubernetesManifests(t *testing.T) []map[string]any {
	t.Helper()
	src, err := os.ReadFile("kubernetes/fabricd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var docs []map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(src))
	for {
		var doc map[string]any
		if err := dec.Decode(&doc); err != nil {
			if err.Error() == "EOF" {
				break
			}
			t.Fatalf("kubernetes/fabricd.yaml: %v", err)
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
	return docs
}

// dig walks nested maps and lists by key and index.
func dig(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func strings_(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

func TestKubernetesDaemonSet(t *testing.T) {
	var ds map[string]any
	for _, m := range kubernetesManifests(t) {
		if m["kind"] == "DaemonSet" {
			ds = m
		}
	}
	if ds == nil {
		t.Fatal("no DaemonSet")
	}
	spec := dig(ds, "spec", "template", "spec")
	if dig(spec, "hostNetwork") != true {
		t.Error("fabricd must use the host's network")
	}
	c := dig(spec, "containers", 0)
	sc := dig(c, "securityContext")
	if dig(sc, "privileged") == true || dig(sc, "allowPrivilegeEscalation") != false {
		t.Error("the container must not be privileged")
	}
	add := strings_(dig(sc, "capabilities", "add"))
	slices.Sort(add)
	if !slices.Equal(add, []string{"NET_ADMIN", "NET_BIND_SERVICE", "NET_RAW"}) {
		t.Errorf("capabilities added: %v", add)
	}
	if !slices.Equal(strings_(dig(sc, "capabilities", "drop")), []string{"ALL"}) {
		t.Error("all other capabilities must be dropped")
	}
	probe := strings.Join(strings_(dig(c, "readinessProbe", "exec", "command")), " ")
	if !strings.Contains(probe, "fabricctl") || !strings.Contains(probe, "wait-online") {
		t.Errorf("readiness probe %q does not ask fabricctl wait-online", probe)
	}
	// A rolling update must be a graceful restart: the image's entrypoint
	// says --sigterm=restart (packaging's tests pin it), so the DaemonSet
	// must neither replace the entrypoint nor undo the flag.
	if dig(c, "command") != nil {
		t.Error("command replaces the image's entrypoint (fabricd --sigterm=restart)")
	}
	for _, arg := range strings_(dig(c, "args")) {
		if strings.HasPrefix(arg, "--sigterm") {
			t.Errorf("args %q: the image's entrypoint already sets --sigterm=restart", arg)
		}
	}
	for _, probe := range []string{"readinessProbe", "livenessProbe"} {
		if argv := strings_(dig(c, probe, "exec", "command")); len(argv) == 0 || !strings.HasPrefix(argv[0], "/") || strings.HasSuffix(argv[0], "sh") {
			t.Errorf("%s %q must exec a program by its full path: the image has no shell", probe, argv)
		}
	}
	mounted := false
	for _, m := range dig(c, "volumeMounts").([]any) {
		if dig(m, "mountPath") == "/etc/fabricd" {
			mounted = true
		}
	}
	if !mounted || dig(spec, "volumes", 0, "configMap", "name") != "fabricd" {
		t.Error("the config must come from the fabricd ConfigMap at /etc/fabricd")
	}
}
