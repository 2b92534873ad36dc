package autoannounce

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path"
	"time"
)

// Validate reports every problem in c, joined, so that a config loader can
// refuse the file. A Watcher never fails on a bad Config: it logs and skips
// the entries that cannot work.
func (c Config) Validate() error {
	var errs []error
	for i, p := range c.Pools {
		if err := p.validate(); err != nil {
			errs = append(errs, fmt.Errorf("pool %d: %w", i+1, err))
		}
	}
	// Calico refuses overlapping pools too; here the first pool would
	// silently win, which is surely not what was meant.
	for i, p := range c.Pools {
		for j := range i {
			q := c.Pools[j]
			if p.Pool.IsValid() && q.Pool.IsValid() && p.Pool.Overlaps(q.Pool) {
				errs = append(errs, fmt.Errorf("pool %d: %s overlaps pool %d (%s)", i+1, p.Pool, j+1, q.Pool))
			}
		}
	}
	for i, a := range c.Addresses {
		if err := a.validate(); err != nil {
			errs = append(errs, fmt.Errorf("address source %d: %w", i+1, err))
		}
	}
	if c.HoldDown < 0 {
		errs = append(errs, fmt.Errorf("hold-down %v is negative", c.HoldDown))
	}
	return errors.Join(errs...)
}

func (p PodPool) validate() error {
	if !p.Pool.IsValid() {
		return errors.New("pool prefix missing or invalid")
	}
	if p.Pool.Addr().Is4In6() {
		return fmt.Errorf("pool %s: IPv4-mapped IPv6 prefix; write the IPv4 prefix", p.Pool)
	}
	if p.Pool.Masked() != p.Pool {
		return fmt.Errorf("pool %s: host bits set (did you mean %s?)", p.Pool, p.Pool.Masked())
	}
	if p.BlockSize < p.Pool.Bits() || p.BlockSize > p.Pool.Addr().BitLen() {
		return fmt.Errorf("pool %s: block size %d must be between %d and %d",
			p.Pool, p.BlockSize, p.Pool.Bits(), p.Pool.Addr().BitLen())
	}
	return validGlob(p.Interfaces)
}

func (a AddressSource) validate() error {
	if err := validGlob(a.Interfaces); err != nil {
		return err
	}
	for _, x := range a.Exclude {
		if !x.IsValid() {
			return errors.New("exclude: invalid prefix")
		}
	}
	return nil
}

func validGlob(g string) error {
	if g == "" {
		return errors.New("interfaces: empty pattern")
	}
	// path.Match checks the whole pattern, whatever the name.
	if _, err := path.Match(g, ""); err != nil {
		return fmt.Errorf("interfaces: bad pattern %q: %w", g, err)
	}
	return nil
}

// settings is a Config reduced to what works: the form state uses.
type settings struct {
	pools    []pool
	addrs    []AddressSource
	holdDown time.Duration
}

// pool is a usable PodPool with its Source string made once.
type pool struct {
	PodPool
	source string
}

// compile turns c into settings, logging and dropping what cannot work.
// It fixes what has an obvious meaning: host bits in a pool are cleared.
func compile(c Config, log *slog.Logger) settings {
	s := settings{holdDown: c.HoldDown}
	if s.holdDown <= 0 {
		if s.holdDown < 0 {
			log.Warn("negative hold-down, using the default", "hold_down", c.HoldDown, "default", DefaultHoldDown)
		}
		s.holdDown = DefaultHoldDown
	}
	for i, p := range c.Pools {
		if p.Pool.IsValid() && !p.Pool.Addr().Is4In6() {
			p.Pool = p.Pool.Masked()
		}
		if err := p.validate(); err != nil {
			log.Error("ignoring pod pool", "index", i+1, "err", err)
			continue
		}
		s.pools = append(s.pools, pool{
			PodPool: p,
			source:  fmt.Sprintf("pods on %s (pool %s)", p.Interfaces, p.Pool),
		})
	}
	for i, a := range c.Addresses {
		if err := a.validate(); err != nil {
			log.Error("ignoring address source", "index", i+1, "err", err)
			continue
		}
		s.addrs = append(s.addrs, a)
	}
	return s
}

// matchName reports whether interface name matches glob. A malformed glob
// matches nothing (compile has dropped those already).
func matchName(glob, name string) bool {
	ok, err := path.Match(glob, name)
	return err == nil && ok
}

// blockOf is the block of size bits containing a.
func blockOf(a netip.Addr, bits int) netip.Prefix {
	p, _ := a.Prefix(bits) // bits is validated: no error
	return p
}
