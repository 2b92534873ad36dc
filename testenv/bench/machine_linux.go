package bench

// DescribeMachine describes where a benchmark runs: OS, kernel, CPUs, memory,
// the load average now, FRR's version, and the fabricd binary (its checksum and
// the commit it was built from). The fabric-scale benchmark (testenv/scale)
// prints it too.
func DescribeMachine(fabricd string) Machine { return describeMachine(fabricd) }
