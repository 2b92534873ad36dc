package frrconf

import (
	"cmp"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// render writes the TOML: a header, every remark in line order, then the
// configuration.
func (t *translator) render() Result {
	var b strings.Builder
	var res Result
	names := make([]string, len(t.srcs))
	for i, s := range t.srcs {
		names[i] = s.Name
	}
	fmt.Fprintf(&b, "# fabricd configuration translated from FRR (%s) by fabricctl import-frr.\n", commentText(strings.Join(names, ", ")))
	b.WriteString("# Check it with `fabricd --config FILE --check`. FRR lines without a remark below are translated.\n")

	count := func(k remarkKind) {
		if k == failKind {
			res.Untranslated++
		} else {
			res.Notes++
		}
	}
	if len(t.general) > 0 || len(t.remarks) > 0 {
		b.WriteString("#\n")
	}
	for _, r := range t.general {
		count(r.kind)
		fmt.Fprintf(&b, "# %s: %s\n", r.kind, commentText(r.why))
	}
	refs := make([]ref, 0, len(t.remarks))
	for at := range t.remarks {
		refs = append(refs, at)
	}
	slices.SortFunc(refs, func(a, b ref) int { return cmp.Or(cmp.Compare(a.src, b.src), cmp.Compare(a.line, b.line)) })
	for _, at := range refs {
		r := t.remarks[at]
		count(r.kind)
		where := fmt.Sprintf("line %d", at.line)
		if len(t.srcs) > 1 {
			where = t.srcs[at.src].Name + " " + where
		}
		fmt.Fprintf(&b, "# %s (%s): %s — %s\n", r.kind, commentText(where), commentText(hidePassword(t.texts[at])), commentText(r.why))
	}

	o := t.o
	fmt.Fprintf(&b, "\nasn = %s\nrouter-id = %s\n", o.asn, o.routerID)
	table(&b, "[bgp]", o.bgp)
	for _, n := range o.neighbors {
		table(&b, "[[neighbor]]", n)
	}
	for _, a := range o.announce {
		keys := []kv{{"prefix", strconv.Quote(a.pfx.String())}}
		if a.blackhole {
			keys = append(keys, kv{"blackhole", "true"})
		}
		table(&b, "[[announce]]", keys)
	}
	if len(o.allow) > 0 {
		b.WriteString("\n[import]\nallow = [\n")
		for _, r := range o.allow {
			fmt.Fprintf(&b, "  { prefix = %q", r.pfx.String())
			switch maxBits := r.pfx.Addr().BitLen(); {
			case r.ge == r.pfx.Bits() && r.le == r.pfx.Bits():
			case r.ge == r.pfx.Bits():
				fmt.Fprintf(&b, ", le = %d", r.le)
			case r.le == maxBits:
				fmt.Fprintf(&b, ", ge = %d", r.ge)
			default:
				fmt.Fprintf(&b, ", ge = %d, le = %d", r.ge, r.le)
			}
			b.WriteString(" },\n")
		}
		b.WriteString("]\n")
		if o.allowDef {
			b.WriteString("allow-default = true\n")
		}
	}
	if o.logLevel != "" {
		table(&b, "[log]", []kv{{"level", strconv.Quote(o.logLevel)}})
	}
	table(&b, "[fib]", o.fib)
	res.TOML = []byte(b.String())
	return res
}

func (k remarkKind) String() string {
	if k == failKind {
		return "not translated"
	}
	return "note"
}

func table(b *strings.Builder, header string, keys []kv) {
	if len(keys) == 0 {
		return
	}
	fmt.Fprintf(b, "\n%s\n", header)
	for _, k := range keys {
		fmt.Fprintf(b, "%s = %s\n", k.key, k.val)
	}
}

// commentText makes s safe inside a TOML comment, which must be UTF-8
// without control characters other than tab.
func commentText(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\t' || r >= 0x20 && r != 0x7f {
			return r
		}
		return utf8.RuneError
	}, strings.ToValidUTF8(s, string(utf8.RuneError)))
}

var passwordRE = regexp.MustCompile(`(\bpassword\s+)\S+`)

// hidePassword keeps secrets out of the comments, which end up in review
// tools and tickets.
func hidePassword(s string) string { return passwordRE.ReplaceAllString(s, "${1}<hidden>") }

// tomlString quotes s as a TOML basic string; s is valid UTF-8 without
// control characters (printable).
func tomlString(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}
