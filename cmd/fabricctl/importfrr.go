package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/fabricd/fabricd/config"
	"github.com/fabricd/fabricd/frrconf"
)

// maxFRRConfig bounds what import-frr reads: an FRR config with a million
// network statements is about 30 MB.
const maxFRRConfig = 64 << 20

// importFRR prints the fabricd.toml equivalent to the FRR configuration
// files in args ("-" is standard input). Exit status: 0 when every line
// was translated, 1 when some were not (they are comments in the output),
// 2 when the input cannot be read.
func importFRR(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, "usage: fabricctl import-frr FILE... (- for standard input)\n")
		return 2
	}
	var srcs []frrconf.Source
	for _, name := range args {
		text, err := readFRRConfig(name, stdin)
		if err != nil {
			fmt.Fprintf(stderr, "fabricctl: import-frr: %v\n", err)
			return 2
		}
		srcs = append(srcs, frrconf.Source{Name: name, Text: text})
	}
	res := frrconf.Translate(srcs)
	// The translation is meant to pass fabricd's own validation whatever
	// the input; check, so a translator bug never reaches a server.
	if _, err := config.Parse("import-frr output", res.TOML); err != nil {
		fmt.Fprintf(stderr, "fabricctl: import-frr produced an invalid configuration (a bug; please report it with the input):\n%v\n", err)
		return 2
	}
	if _, err := stdout.Write(res.TOML); err != nil {
		fmt.Fprintf(stderr, "fabricctl: import-frr: %v\n", err)
		return 2
	}
	if res.Untranslated > 0 {
		fmt.Fprintf(stderr, "fabricctl: import-frr: %d FRR lines not translated (see the \"not translated\" comments), %d notes\n", res.Untranslated, res.Notes)
		return 1
	}
	return 0
}

func readFRRConfig(name string, stdin io.Reader) ([]byte, error) {
	r := stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	text, err := io.ReadAll(io.LimitReader(r, maxFRRConfig+1))
	switch {
	case err != nil:
		return nil, fmt.Errorf("reading %s: %w", name, err)
	case len(text) > maxFRRConfig:
		return nil, fmt.Errorf("%s: %w", name, errTooLarge)
	}
	return text, nil
}

var errTooLarge = errors.New("larger than 64 MiB; not an FRR configuration")
