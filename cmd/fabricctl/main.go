// Command fabricctl queries and controls a running fabricd over its Unix
// socket. Its show commands read like FRR's vtysh; a trailing "json"
// prints the same data as JSON.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/fabricd/fabricd/api"
	"github.com/fabricd/fabricd/api/fabricdpb"
	"github.com/fabricd/fabricd/config"
)

const usage = `usage: fabricctl [--socket PATH] COMMAND

commands:
  show bgp summary [json]        BGP sessions, like vtysh's "show bgp summary"
  show bgp ipv4 unicast [json]   the BGP table with best-path marks (also ipv6)
  show ip route [json]           the routes fabricd installed in the kernel (also ipv6)
  show interface [json]          uplinks: link, discovered ToR, last RA, session
  reload                         re-read the configuration and apply the difference
  wait-online [--timeout D] [--any]
                                 wait until the BGP sessions are up and their routes
                                 installed (every uplink, or --any one); exit 1 on timeout
  import-frr FILE...             print the fabricd.toml equivalent to an FRR server
                                 config (frr.conf, or bgpd.conf staticd.conf ...;
                                 - reads standard input); exit 1 if some lines are
                                 not translated (they become comments)
  completion bash                print a bash completion script
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fabricctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", config.DefaultSocket, "fabricd's API socket")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for fabricd")
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	if err := fs.Parse(args); err != nil {
		return 2
	}
	words := fs.Args()
	if len(words) > 0 && words[0] == "import-frr" {
		return importFRR(words[1:], stdin, stdout, stderr)
	}
	asJSON := len(words) > 0 && words[len(words)-1] == "json"
	if asJSON {
		words = words[:len(words)-1]
	}
	cmd := strings.Join(words, " ")

	if cmd == "completion bash" {
		fmt.Fprint(stdout, bashCompletion)
		return 0
	}
	if len(words) > 0 && words[0] == "wait-online" {
		return waitOnline(*socket, words[1:], stdout, stderr)
	}
	call, ok := commands[cmd]
	if !ok {
		if cmd == "" {
			fmt.Fprint(stderr, usage)
		} else {
			fmt.Fprintf(stderr, "fabricctl: unknown command %q\n%s", cmd, usage)
		}
		return 2
	}

	if err := reachable(*socket); err != nil {
		fmt.Fprintf(stderr, "fabricctl: %v\n", err)
		return 1
	}
	client, closeConn, err := api.Dial(*socket)
	if err != nil {
		fmt.Fprintf(stderr, "fabricctl: %v\n", err)
		return 1
	}
	defer closeConn()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	msg, render, err := call(ctx, client)
	if err != nil {
		fmt.Fprintf(stderr, "fabricctl: %s\n", status.Convert(err).Message())
		return 1
	}
	if asJSON {
		out, err := marshalJSON(msg)
		if err != nil {
			fmt.Fprintf(stderr, "fabricctl: encoding JSON: %v\n", err)
			return 1
		}
		fmt.Fprintln(stdout, string(out))
		return 0
	}
	render(stdout)
	return 0
}

// marshalJSON renders msg as indented JSON. protojson varies its
// whitespace from build to build on purpose; re-indenting makes the output
// stable for scripts that compare or grep it.
func marshalJSON(msg proto.Message) ([]byte, error) {
	compact, err := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(msg)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, compact, "", "  "); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// reachable turns the usual reasons a socket cannot be used into one
// clear sentence, before gRPC would retry and wrap them.
func reachable(path string) error {
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err == nil {
		c.Close()
		return nil
	}
	switch {
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("fabricd is not running (nothing listens on %s)", path)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Errorf("permission denied on %s: run as root or as a member of the socket's group ([api] group)", path)
	}
	return fmt.Errorf("cannot reach fabricd at %s: %v", path, err)
}

type command func(context.Context, fabricdpb.FabricdClient) (proto.Message, func(io.Writer), error)

var commands = map[string]command{
	"show bgp summary": func(ctx context.Context, c fabricdpb.FabricdClient) (proto.Message, func(io.Writer), error) {
		s, err := c.GetSummary(ctx, &fabricdpb.GetSummaryRequest{})
		return s, func(w io.Writer) { writeSummary(w, s) }, err
	},
	"show bgp ipv4 unicast": bgpTable(4),
	"show bgp ipv6 unicast": bgpTable(6),
	"show ip route":         installedRoutes(false),
	"show ipv6 route":       installedRoutes(true),
	"show interface": func(ctx context.Context, c fabricdpb.FabricdClient) (proto.Message, func(io.Writer), error) {
		i, err := c.GetInterfaces(ctx, &fabricdpb.GetInterfacesRequest{})
		return i, func(w io.Writer) { writeInterfaces(w, i) }, err
	},
	"reload": func(ctx context.Context, c fabricdpb.FabricdClient) (proto.Message, func(io.Writer), error) {
		r, err := c.Reload(ctx, &fabricdpb.ReloadRequest{})
		return r, func(w io.Writer) {
			for _, ch := range r.GetChanges() {
				fmt.Fprintln(w, ch)
			}
		}, err
	},
}

func bgpTable(afi uint32) command {
	return func(ctx context.Context, c fabricdpb.FabricdClient) (proto.Message, func(io.Writer), error) {
		t, err := c.GetBGPTable(ctx, &fabricdpb.GetBGPTableRequest{Afi: afi})
		return t, func(w io.Writer) { writeBGPTable(w, t) }, err
	}
}

func installedRoutes(v6 bool) command {
	return func(ctx context.Context, c fabricdpb.FabricdClient) (proto.Message, func(io.Writer), error) {
		r, err := c.GetInstalledRoutes(ctx, &fabricdpb.GetInstalledRoutesRequest{})
		if err == nil {
			// JSON gets the family asked for, as the text does.
			kept := r.Routes[:0]
			for _, rt := range r.Routes {
				if strings.Contains(rt.GetPrefix(), ":") == v6 {
					kept = append(kept, rt)
				}
			}
			r.Routes = kept
		}
		return r, func(w io.Writer) { writeRoutes(w, r, v6) }, err
	}
}

func init() {
	// vtysh's synonyms.
	commands["show ip bgp"] = commands["show bgp ipv4 unicast"]
	commands["show bgp ipv6"] = commands["show bgp ipv6 unicast"]
	commands["show bgp"] = commands["show bgp ipv4 unicast"]
	commands["show ip bgp summary"] = commands["show bgp summary"]
	commands["show bgp ipv4 unicast summary"] = commands["show bgp summary"]
	commands["show interfaces"] = commands["show interface"]
}

const bashCompletion = `# fabricctl bash completion: source it, or install it as
# /usr/share/bash-completion/completions/fabricctl
_fabricctl() {
	local cur words
	cur="${COMP_WORDS[COMP_CWORD]}"
	words="${COMP_WORDS[*]:1:COMP_CWORD-1}"
	case "$words" in
	"") COMPREPLY=($(compgen -W "show reload wait-online import-frr completion --socket" -- "$cur")) ;;
	import-frr*) COMPREPLY=($(compgen -f -- "$cur")) ;;
	"show") COMPREPLY=($(compgen -W "bgp ip ipv6 interface" -- "$cur")) ;;
	"show bgp") COMPREPLY=($(compgen -W "summary ipv4 ipv6 json" -- "$cur")) ;;
	"show bgp ipv4"|"show bgp ipv6") COMPREPLY=($(compgen -W "unicast" -- "$cur")) ;;
	"show ipv6") COMPREPLY=($(compgen -W "route" -- "$cur")) ;;
	"show ip") COMPREPLY=($(compgen -W "route bgp" -- "$cur")) ;;
	"show bgp summary"|"show bgp ipv4 unicast"|"show ip route"|"show interface") COMPREPLY=($(compgen -W "json" -- "$cur")) ;;
	"completion") COMPREPLY=($(compgen -W "bash" -- "$cur")) ;;
	esac
}
complete -F _fabricctl fabricctl
`
