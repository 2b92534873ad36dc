package testenv

// FRRConfigFile is one of the configuration files of a server's FRR.
type FRRConfigFile struct {
	Name string // "zebra.conf", "staticd.conf" or "bgpd.conf"
	Text string
}

// FRRConfig returns the configuration files a RoleFRR server's zebra,
// staticd and bgpd start with, in that order, whatever the lab's role:
// fabricd's import of FRR configurations (fabricctl import-frr) is tested
// against them.
func (s *Server) FRRConfig() []FRRConfigFile {
	return []FRRConfigFile{
		{"zebra.conf", s.zebraConf()},
		{"staticd.conf", s.staticdConf()},
		{"bgpd.conf", s.bgpdConf()},
	}
}
