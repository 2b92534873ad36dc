// Package dist holds what is installed beside the binaries: the systemd
// units, the example configuration and the man pages. Its tests keep the
// man pages in step with README (the reference for every configuration
// key, command and signal), the flags the programs define and the
// configuration parser, so a key added without documentation, or
// documented without existing, fails the build.
package dist

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/fabricd/fabricd/config"
)

// manText is a man page reduced to what a reader sees: one string per
// source line, macros dropped, roff escapes resolved.
type manText struct {
	lines []string // rendered lines
	raw   []string // the source lines, for section and item structure
}

var roffEscapes = strings.NewReplacer(`\-`, "-", `\(dq`, `"`, `\(mu`, "×", `\&`, "", `\e`, `\`)

func readMan(t *testing.T, name string) manText {
	t.Helper()
	src, err := os.ReadFile("man/" + name)
	if err != nil {
		t.Fatal(err)
	}
	var m manText
	for _, line := range strings.Split(string(src), "\n") {
		m.raw = append(m.raw, line)
		text := line
		if strings.HasPrefix(text, ".") {
			// ".BR foo (8)," -> "foo (8),"; font macros alternate fonts
			// between words, which does not matter for reading.
			_, text, _ = strings.Cut(text, " ")
			text = strings.ReplaceAll(text, `"`, "")
		}
		m.lines = append(m.lines, roffEscapes.Replace(text))
	}
	return m
}

// section returns the rendered lines of the .SH section named title.
func (m manText) section(title string) []string {
	var out []string
	in := false
	for i, raw := range m.raw {
		if strings.HasPrefix(raw, ".SH ") {
			in = roffEscapes.Replace(strings.Trim(strings.TrimPrefix(raw, ".SH "), `"`)) == title
			continue
		}
		if in {
			out = append(out, m.lines[i])
		}
	}
	return out
}

// item returns the text of the .TP item in section title whose tag line
// is tag, up to the next item or section; nil if there is none.
func (m manText) item(title, tag string) []string {
	var out []string
	inSection, inItem := false, false
	for i, raw := range m.raw {
		switch {
		case strings.HasPrefix(raw, ".SH "):
			inSection = roffEscapes.Replace(strings.Trim(strings.TrimPrefix(raw, ".SH "), `"`)) == title
			inItem = false
		case raw == ".TP":
			inItem = false
			if inSection && i+1 < len(m.raw) && m.lines[i+1] == tag {
				inItem = true
				out = []string{}
			}
		case inItem:
			out = append(out, m.lines[i])
		}
	}
	return out
}

func (m manText) contains(s string) bool {
	return strings.Contains(strings.Join(m.lines, " "), s)
}

// readmeTable returns the rows of the README table whose header line is
// header, each as its cells.
func readmeTable(t *testing.T, header string) [][]string {
	t.Helper()
	src, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(src), "\n")
	start := slices.Index(lines, header)
	if start < 0 {
		t.Fatalf("README has no table %q", header)
	}
	var rows [][]string
	for _, l := range lines[start+2:] {
		if !strings.HasPrefix(l, "|") {
			break
		}
		var cells []string
		for _, c := range strings.Split(strings.Trim(l, "|"), " | ") {
			cells = append(cells, strings.TrimSpace(c))
		}
		rows = append(rows, cells)
	}
	if len(rows) == 0 {
		t.Fatalf("README table %q is empty", header)
	}
	return rows
}

var backticked = regexp.MustCompile("`([^`]+)`")

// Every key of README's configuration reference is in fabricd.toml(5),
// in its section, with README's default; and the parser knows it.
func TestConfigManPageHasEveryKey(t *testing.T) {
	man := readMan(t, "fabricd.toml.5")
	for _, row := range readmeTable(t, "| key | default | meaning |") {
		key := strings.Trim(row[0], "`")
		section, name := "TOP-LEVEL KEYS", key
		if strings.HasPrefix(key, "[") {
			section, name, _ = strings.Cut(key, " ")
		}
		entry := man.item(section, name)
		if entry == nil {
			t.Errorf("fabricd.toml.5: no entry for %s in section %s", name, section)
			continue
		}
		text := strings.Join(entry, " ")
		def := row[1]
		want := def
		if m := backticked.FindStringSubmatch(def); m != nil {
			want = m[1]
		} else if def == "required" {
			want = "Required"
		}
		if !strings.Contains(text, want) {
			t.Errorf("fabricd.toml.5: %s %s: README's default %q is not in %q", section, name, want, text)
		}
		if err := parseKey(section, name); err != nil {
			t.Errorf("README and fabricd.toml.5 document %s %s, but the parser does not know it: %v", section, name, err)
		}
	}
}

// parseKey reports whether config.Parse takes key in section as a known
// key: the value may be of the wrong type, but not unknown.
func parseKey(section, key string) error {
	var doc string
	switch {
	case section == "TOP-LEVEL KEYS":
		doc = fmt.Sprintf("%s = 1\n", key)
	case strings.HasPrefix(section, "[["):
		doc = fmt.Sprintf("%s\n%s = 1\n", section, key)
	default:
		doc = fmt.Sprintf("%s\n%s = 1\n", section, key)
	}
	_, err := config.Parse("probe.toml", []byte(doc))
	if err != nil && strings.Contains(err.Error(), key+": unknown key") {
		return err
	}
	return nil
}

// The probe itself must be able to fail: an invented key is unknown.
func TestParseKeyDetectsUnknownKeys(t *testing.T) {
	if parseKey("[bgp]", "hold-tim") == nil {
		t.Fatal("parseKey accepts a key the parser does not have")
	}
}

// Every fabricctl command README lists is in fabricctl(8), and so is
// every flag fabricctl defines.
func TestFabricctlManPage(t *testing.T) {
	man := readMan(t, "fabricctl.8")
	commands := man.section("COMMANDS")
	if len(commands) == 0 {
		t.Fatal("fabricctl.8 has no COMMANDS section")
	}
	// Quoted font-macro arguments leave doubled spaces: compare words.
	text := strings.Join(strings.Fields(strings.Join(commands, " ")), " ")
	for _, row := range readmeTable(t, "| command | shows |") {
		for _, m := range backticked.FindAllStringSubmatch(row[0], -1) {
			cmd := strings.TrimPrefix(m[1], "fabricctl ")
			cmd, _, _ = strings.Cut(cmd, " [") // options are checked below
			if !strings.Contains(text, cmd) {
				t.Errorf("fabricctl.8: command %q is not in COMMANDS", cmd)
			}
		}
	}
	for _, flag := range sourceFlags(t, "../cmd/fabricctl/main.go", "../cmd/fabricctl/waitonline.go") {
		if !man.contains("--" + flag) {
			t.Errorf("fabricctl.8 does not document --%s", flag)
		}
	}
}

// fabricd(8) documents every flag fabricd defines and every signal of
// README's signal table.
func TestFabricdManPage(t *testing.T) {
	man := readMan(t, "fabricd.8")
	for _, flag := range sourceFlags(t, "../cmd/fabricd/main.go") {
		if man.item("OPTIONS", "--"+flag) == nil && !slices.ContainsFunc(man.section("OPTIONS"), func(l string) bool {
			return strings.HasPrefix(l, "--"+flag+" ")
		}) {
			t.Errorf("fabricd.8: --%s is not in OPTIONS", flag)
		}
	}
	signals := strings.Join(man.section("SIGNALS"), " ")
	for _, row := range readmeTable(t, "| signal | what fabricd does | used by |") {
		for _, sig := range strings.Split(row[0], ", ") {
			if !strings.Contains(signals, sig) {
				t.Errorf("fabricd.8: signal %s is not in SIGNALS", sig)
			}
		}
		for _, m := range backticked.FindAllStringSubmatch(row[2], -1) {
			if !strings.Contains(signals, m[1]) {
				t.Errorf("fabricd.8: SIGNALS does not say %s is sent by %q", row[0], m[1])
			}
		}
	}
}

var flagDef = regexp.MustCompile(`\.(?:String|Bool|Duration|Int)\("([a-z-]+)"`)

// sourceFlags returns the names of the flags the given Go files define.
func sourceFlags(t *testing.T, files ...string) []string {
	t.Helper()
	var flags []string
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range flagDef.FindAllStringSubmatch(string(src), -1) {
			flags = append(flags, m[1])
		}
	}
	if len(flags) == 0 {
		t.Fatalf("no flags found in %v: has the way flags are defined changed?", files)
	}
	return flags
}
