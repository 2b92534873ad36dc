package bench

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fabricd/fabricd/testenv"
	"github.com/fabricd/fabricd/testenv/nlmon"
)

// Profile is where fabricd's CPU time went during one FIB-completion run.
type Profile struct {
	N          int
	Dir        string // perf.data and the full reports
	Samples    int
	Kernel     float64 // share of samples whose innermost frame is in the kernel
	Categories []Share // by component, see classify
	Inclusive  []Share // the functions of inclusiveFuncs: samples with them on the stack
	Top        []Share // innermost function ("self" time), largest first
	Window     time.Duration
}

// inclusiveFuncs are the functions whose inclusive share tells where fabricd's
// time goes; a name that no longer exists in GoBGP or fabricd just shows 0%.
var inclusiveFuncs = []struct{ label, fn string }{
	{"GoBGP: receive and handle UPDATEs (`handleFSMMessage`)", "github.com/osrg/gobgp/v4/pkg/server.(*BgpServer).handleFSMMessage"},
	{"GoBGP: decode UPDATEs (`recvMessageWithError`)", "github.com/osrg/gobgp/v4/pkg/server.(*fsmHandler).recvMessageWithError"},
	{"GoBGP: Adj-RIB-In and table updates (`TableManager.Update`)", "github.com/osrg/gobgp/v4/internal/pkg/table.(*TableManager).Update"},
	{"GoBGP: `propagateUpdate` (best path, export to peers, watchers)", "github.com/osrg/gobgp/v4/pkg/server.(*BgpServer).propagateUpdate"},
	{"GoBGP: `filterPathFromSourcePeer` (export back to the sender)", "github.com/osrg/gobgp/v4/pkg/server.(*peer).filterPathFromSourcePeer"},
	{"GoBGP: `table.(*Path).String` (for a debug log that is never printed)", "github.com/osrg/gobgp/v4/internal/pkg/table.(*Path).String"},
	{"fabricd: watch callback (`bgp.(*Speaker).onPaths`, incl. rib)", "github.com/fabricd/fabricd/bgp.(*Speaker).onPaths"},
	{"fabricd: fib writer (`fib.(*Writer).syncChanged`)", "github.com/fabricd/fabricd/fib.(*Writer).syncChanged"},
	{"fabricd: its netlink sendmsg, incl. the kernel's route insertion", "golang.org/x/sys/unix.Sendto"},
	{"Go: allocation (`runtime.mallocgc`)", "runtime.mallocgc"},
	{"Go: background GC workers (`gcBgMarkWorker`)", "runtime.gcBgMarkWorker"},
	{"Go: GC assists (`gcAssistAlloc`)", "runtime.gcAssistAlloc"},
}

// Share is a part of the samples.
type Share struct {
	Name    string
	Percent float64
}

// categories classify a sample by the first rule any of its frames matches; the
// order matters (GC assists run inside whichever goroutine allocates).
var categories = []struct {
	name  string
	match func(fn string) bool
}{
	{"Go GC (mark, assists, sweep)", func(fn string) bool {
		return slices.Contains([]string{"runtime.gcBgMarkWorker", "runtime.gcAssistAlloc", "runtime.bgsweep", "runtime.bgscavenge", "runtime.gcDrain", "runtime.scanobject", "runtime.markroot", "runtime.wbBufFlush"}, fn)
	}},
	{"fabricd fib writer (incl. its netlink syscalls)", func(fn string) bool { return strings.Contains(fn, "fabricd/fabricd/fib.") }},
	{"fabricd rib", func(fn string) bool { return strings.Contains(fn, "fabricd/fabricd/rib.") }},
	{"fabricd bgp glue (watch callback)", func(fn string) bool { return strings.Contains(fn, "fabricd/fabricd/bgp.") }},
	{"GoBGP (BGP messages, tables, best path)", func(fn string) bool { return strings.Contains(fn, "osrg/gobgp") }},
	{"other fabricd", func(fn string) bool { return strings.Contains(fn, "fabricd/fabricd/") }},
	{"Go runtime (scheduler, allocation, other)", func(fn string) bool { return strings.HasPrefix(fn, "runtime.") }},
}

// runProfile runs fabricd once at size n under `perf record -g`, from just after its
// start until all n routes are in the kernel, and summarizes the samples. It is a
// run of its own: perf's overhead must not touch the timed ones.
func (b *Bench) runProfile(ctx context.Context, n int, dir string) (_ *Profile, err error) {
	perf, err := exec.LookPath("perf")
	if err != nil {
		return nil, fmt.Errorf("profiling needs perf (apt-get install linux-perf): %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	lab, err := testenv.New(ctx, b.labOptions(testenv.RoleFabricd, 1, n))
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, lab.Close()) }()
	srv := lab.Server("c1")
	mon, err := nlmon.Open(srv.Namespace(), nlmon.Options{Watch: b.base(), Poll: monitorPoll})
	if err != nil {
		return nil, err
	}
	defer mon.Close()
	all := mon.Watch(fmt.Sprintf("%d routes in %s's kernel", n, srv.Name()), func(m *nlmon.FIB) bool { return m.Routes() >= n })
	if err := srv.Start(ctx); err != nil {
		return nil, err
	}
	pid, ok := srv.PIDs()["fabricd"]
	if !ok {
		return nil, errors.New("fabricd is not running")
	}
	data := filepath.Join(dir, "perf.data")
	logFile, err := os.Create(filepath.Join(dir, "perf-record.log"))
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	rec := exec.Command(perf, "record", "-g", "-F", "999", "-p", strconv.Itoa(pid), "-o", data)
	rec.Stdout, rec.Stderr = logFile, logFile
	begin := time.Now()
	if err := rec.Start(); err != nil {
		return nil, fmt.Errorf("starting perf record: %w", err)
	}
	stopped := false
	defer func() {
		if !stopped {
			rec.Process.Kill()
			rec.Wait()
		}
	}()
	if _, err := all.Wait(ctx, fibTimeout(n)); err != nil {
		return nil, err
	}
	window := time.Since(begin)
	// perf writes its file on SIGINT.
	if err := rec.Process.Signal(syscall.SIGINT); err != nil {
		return nil, fmt.Errorf("stopping perf record: %w", err)
	}
	stopped = true
	if err := rec.Wait(); err != nil {
		var ee *exec.ExitError
		// perf exits with the signal's status after a clean SIGINT on some versions.
		if !errors.As(err, &ee) {
			return nil, fmt.Errorf("perf record: %w", err)
		}
	}

	p := &Profile{N: n, Dir: dir, Window: window}
	// For a human with more questions: the call graph, by self time.
	if err := perfToFile(ctx, filepath.Join(dir, "report.txt"), perf, "report", "-i", data, "--stdio", "--no-children", "--sort", "symbol", "--percent-limit", "0.5"); err != nil {
		return nil, err
	}
	script := filepath.Join(dir, "script.txt")
	if err := perfToFile(ctx, script, perf, "script", "-i", data, "-F", "ip,sym"); err != nil {
		return nil, err
	}
	if err := p.classify(script); err != nil {
		return nil, err
	}
	return p, nil
}

func perfToFile(ctx context.Context, path, perf string, args ...string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.CommandContext(ctx, perf, args...)
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = f, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("perf %s: %w: %s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// classify reads `perf script -F ip,sym` output (one block of frames per sample,
// innermost first, blocks separated by blank lines) and fills in the categories.
func (p *Profile) classify(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	counts := make([]int, len(categories)+1)
	inclusive := make([]int, len(inclusiveFuncs))
	self := map[string]int{}
	kernel := 0
	var frames []string
	leafKernel := false
	flush := func() {
		if len(frames) == 0 {
			return
		}
		p.Samples++
		if leafKernel {
			kernel++
		}
		self[frames[0]]++
		for i, f := range inclusiveFuncs {
			if slices.Contains(frames, f.fn) {
				inclusive[i]++
			}
		}
		cat := len(categories) // "other": no rule matched
	rules:
		for i, c := range categories {
			for _, fn := range frames {
				if c.match(fn) {
					cat = i
					break rules
				}
			}
		}
		counts[cat]++
		frames, leafKernel = frames[:0], false
	}
	r := bufio.NewReaderSize(f, 1<<20)
	for {
		line, err := r.ReadString('\n')
		if t := strings.TrimSpace(line); t == "" {
			flush()
		} else {
			// "ffffffff81234567 do_syscall_64+0x5c" or "4a5b6c runtime.mallocgc"
			addr, sym, _ := strings.Cut(t, " ")
			if len(frames) == 0 {
				leafKernel = strings.HasPrefix(addr, "ffff")
			}
			if i := strings.LastIndex(sym, "+0x"); i > 0 {
				sym = sym[:i]
			}
			frames = append(frames, sym)
		}
		if err == io.EOF {
			flush()
			break
		}
		if err != nil {
			return err
		}
	}
	if p.Samples == 0 {
		return fmt.Errorf("%s has no samples", path)
	}
	pct := func(c int) float64 { return 100 * float64(c) / float64(p.Samples) }
	p.Kernel = pct(kernel)
	for i, c := range categories {
		p.Categories = append(p.Categories, Share{Name: c.name, Percent: pct(counts[i])})
	}
	p.Categories = append(p.Categories, Share{Name: "other", Percent: pct(counts[len(categories)])})
	for i, f := range inclusiveFuncs {
		p.Inclusive = append(p.Inclusive, Share{Name: f.label, Percent: pct(inclusive[i])})
	}
	for fn, c := range self {
		p.Top = append(p.Top, Share{Name: fn, Percent: pct(c)})
	}
	slices.SortFunc(p.Top, func(a, b Share) int {
		if c := cmp.Compare(b.Percent, a.Percent); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	p.Top = p.Top[:min(len(p.Top), 12)]
	return nil
}

// Markdown renders the profile.
func (p *Profile) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "### CPU profile of fabricd, N = %s\n\n", thousands(p.N))
	fmt.Fprintf(&b, "`perf record -g -F 999` on fabricd from just after its start until all routes were in the kernel (%v, %d samples; %s). ",
		p.Window.Round(time.Millisecond), p.Samples, p.Dir)
	fmt.Fprintf(&b, "In %.0f%% of the samples fabricd was executing in the kernel.\n\n", p.Kernel)
	b.WriteString("| component (first match over the whole stack) | share of samples |\n|---|---|\n")
	for _, c := range p.Categories {
		fmt.Fprintf(&b, "| %s | %.1f%% |\n", c.Name, c.Percent)
	}
	b.WriteString("\n| on the stack (inclusive) | share of samples |\n|---|---|\n")
	for _, c := range p.Inclusive {
		fmt.Fprintf(&b, "| %s | %.1f%% |\n", c.Name, c.Percent)
	}
	b.WriteString("\n| innermost function (self time) | share of samples |\n|---|---|\n")
	for _, t := range p.Top {
		fmt.Fprintf(&b, "| `%s` | %.1f%% |\n", strings.ReplaceAll(t.Name, "|", "\\|"), t.Percent)
	}
	return b.String()
}
