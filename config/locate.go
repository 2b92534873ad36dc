package config

import (
	"regexp"
	"strconv"
	"strings"
)

// locator finds the line a key was written on. BurntSushi/toml keeps key
// positions private, so after decoding we scan the source for table headers
// and "key =" lines. That covers the forms a fabricd config uses (plain keys,
// [table] and [[array]] headers); anything it cannot place is reported at the
// line of the enclosing table, or line 1 for the root table.
type locator struct {
	lines []string
}

func newLocator(src []byte) *locator {
	return &locator{lines: strings.Split(string(src), "\n")}
}

var (
	headerRE = regexp.MustCompile(`^\s*(\[\[?)\s*([A-Za-z0-9_.-]+)\s*\]\]?`)
	keyRE    = regexp.MustCompile(`^\s*([A-Za-z0-9_-]+)\s*=`)
)

// line returns the 1-based line of key, written as "table.key", "key", or
// "table#N.key" for the N-th (1-based) element of an array of tables.
func (l *locator) line(key string) int {
	table, leaf := "", key
	if i := strings.LastIndexByte(key, '.'); i >= 0 {
		table, leaf = key[:i], key[i+1:]
	}
	element := 0
	if i := strings.IndexByte(table, '#'); i >= 0 {
		element, _ = strconv.Atoi(table[i+1:])
		table = table[:i]
		if strings.Contains(table, ".") && !l.hasHeader(table) {
			// An element of an inline array: the line of the array.
			return l.line(table)
		}
	}

	current, seen := "", 0
	tableLine := 0
	if table == "" {
		tableLine = 1
	}
	for n, text := range l.lines {
		if m := headerRE.FindStringSubmatch(text); m != nil {
			current = m[2]
			if current == table {
				seen++
				if (element == 0 && seen == 1) || seen == element {
					tableLine = n + 1
				}
			}
			continue
		}
		if current != table || (element != 0 && seen != element) {
			continue
		}
		if m := keyRE.FindStringSubmatch(text); m != nil && m[1] == leaf {
			return n + 1
		}
	}
	if tableLine == 0 && strings.Contains(table, ".") && element == 0 {
		// An inline table or array ("allow = [{...}]"): the line of the
		// key that holds it.
		return l.line(table)
	}
	if tableLine == 0 {
		return 1
	}
	return tableLine
}

// hasHeader reports whether a [table] or [[table]] header names table.
func (l *locator) hasHeader(table string) bool {
	for _, text := range l.lines {
		if m := headerRE.FindStringSubmatch(text); m != nil && m[2] == table {
			return true
		}
	}
	return false
}
