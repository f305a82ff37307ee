// Command runc_stats times runc's libcontainer cgroup managers on the
// containers of cgstats' benchmark, for a side-by-side comparison.
//
// This is what cAdvisor and Docker do for every container on every sample:
// GetStats() of the runc cgroup manager (fs for cgroup v1, fs2 for v2; every
// controller's every file opened, read and closed), plus /proc/<pid>/net/dev
// opened and parsed as cAdvisor does (its container/libcontainer handler).
//
// Input, on stdin: a JSON list of containers,
//
//	[{"id": "...", "paths": {"cpu": "/sys/fs/cgroup/cpu/...", ...}, "pid": 123}, ...]
//
// where "paths" maps v1 subsystem names (as fs.NewManager's paths map wants
// them: "cpu", "cpuacct", "memory", "name=systemd", ...) to directories, or
// "unified" names the cgroup v2 directory (then fs2.NewManager is used).
//
// Output, on stdout: JSON with the best of -repeats timings of -rounds rounds
// over every container, in µs per container per round (total, GetStats alone
// and net/dev alone), and the raw values of a few counters from the last
// round of each container, for a cross-check against cgstats.
//
// Build offline from Debian's packages (golang-go,
// golang-github-opencontainers-runc-dev, runc 1.1.5):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= go build -o runc_stats .
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/runc/libcontainer/cgroups"
	"github.com/opencontainers/runc/libcontainer/cgroups/fs"
	"github.com/opencontainers/runc/libcontainer/cgroups/fs2"
	"github.com/opencontainers/runc/libcontainer/configs"
)

type container struct {
	ID      string            `json:"id"`
	Paths   map[string]string `json:"paths,omitempty"`
	Unified string            `json:"unified,omitempty"`
	Pid     int               `json:"pid"`
}

// netCounters are the per-interface values kept for the cross-check.
type netCounters struct {
	RxBytes   uint64 `json:"rx_bytes"`
	RxPackets uint64 `json:"rx_packets"`
	TxBytes   uint64 `json:"tx_bytes"`
	TxPackets uint64 `json:"tx_packets"`
}

// values are the counters of one container's last round.
type values struct {
	ID                string                 `json:"id"`
	CPUUsageNs        uint64                 `json:"cpu_usage_ns"`
	MemoryUsageBytes  uint64                 `json:"memory_usage_bytes"`
	TotalInactiveFile *uint64                `json:"total_inactive_file"`
	InactiveFile      *uint64                `json:"inactive_file"`
	PidsCurrent       uint64                 `json:"pids_current"`
	PidsLimit         uint64                 `json:"pids_limit"`
	IoBytes           map[string][2]uint64   `json:"io_bytes"` // "MAJ:MIN" -> [read, write]
	Net               map[string]netCounters `json:"net"`
}

// readNetDev opens, reads and parses /proc/<pid>/net/dev like cAdvisor's
// scanInterfaceStats: skip the two header lines, drop the colon, split on
// whitespace, parse the 16 counters of each interface.
func readNetDev(path string) (map[string]netCounters, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	result := make(map[string]netCounters)
	scanner := bufio.NewScanner(file)
	for line := 0; scanner.Scan(); line++ {
		if line < 2 {
			continue
		}
		fields := strings.Fields(strings.Replace(scanner.Text(), ":", " ", 1))
		if len(fields) != 17 {
			return nil, fmt.Errorf("%s: %d fields in %q", path, len(fields), scanner.Text())
		}
		var counters [16]uint64
		for i := range counters {
			if counters[i], err = strconv.ParseUint(fields[i+1], 10, 64); err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
		}
		result[fields[0]] = netCounters{counters[0], counters[1], counters[8], counters[9]}
	}
	return result, scanner.Err()
}

func lookup(stats map[string]uint64, key string) *uint64 {
	if value, ok := stats[key]; ok {
		return &value
	}
	return nil
}

func extract(id string, stats *cgroups.Stats, net map[string]netCounters) values {
	v := values{
		ID:                id,
		CPUUsageNs:        stats.CpuStats.CpuUsage.TotalUsage,
		MemoryUsageBytes:  stats.MemoryStats.Usage.Usage,
		TotalInactiveFile: lookup(stats.MemoryStats.Stats, "total_inactive_file"),
		InactiveFile:      lookup(stats.MemoryStats.Stats, "inactive_file"),
		PidsCurrent:       stats.PidsStats.Current,
		PidsLimit:         stats.PidsStats.Limit,
		IoBytes:           make(map[string][2]uint64),
		Net:               net,
	}
	// fs fills IoServiceBytesRecursive with one entry per device and op
	// (Read, Write, Sync, Async, Discard, Total); fs2 with lowercase "read"
	// and "write" from io.stat.
	for _, entry := range stats.BlkioStats.IoServiceBytesRecursive {
		device := fmt.Sprintf("%d:%d", entry.Major, entry.Minor)
		pair := v.IoBytes[device]
		switch strings.ToLower(entry.Op) {
		case "read":
			pair[0] = entry.Value
		case "write":
			pair[1] = entry.Value
		}
		v.IoBytes[device] = pair
	}
	return v
}

func main() {
	rounds := flag.Int("rounds", 10, "rounds over every container per timing (0: values only)")
	repeats := flag.Int("repeats", 5, "timings; the best is kept")
	flag.Parse()

	var list []container
	if err := json.NewDecoder(os.Stdin).Decode(&list); err != nil {
		fmt.Fprintln(os.Stderr, "runc_stats: reading the container list:", err)
		os.Exit(2)
	}
	if len(list) == 0 {
		fmt.Fprintln(os.Stderr, "runc_stats: no containers")
		os.Exit(2)
	}

	// One manager per container, made once, as cAdvisor keeps one per
	// container handler. fs.NewManager refuses a nil Resources.
	managers := make([]cgroups.Manager, len(list))
	netPaths := make([]string, len(list))
	for i, c := range list {
		config := &configs.Cgroup{Resources: &configs.Resources{}}
		var err error
		if c.Unified != "" {
			managers[i], err = fs2.NewManager(config, c.Unified)
		} else {
			managers[i], err = fs.NewManager(config, c.Paths)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "runc_stats: %s: %v\n", c.ID, err)
			os.Exit(1)
		}
		netPaths[i] = fmt.Sprintf("/proc/%d/net/dev", c.Pid)
	}

	last := make([]values, len(list))
	var errors []string // the first 10
	errorCount := 0
	fail := func(message string) {
		if errorCount++; errorCount <= 10 {
			errors = append(errors, message)
		}
	}
	sample := func(i int, keep bool) {
		stats, err := managers[i].GetStats()
		if err != nil {
			fail(fmt.Sprintf("%s: GetStats: %v", list[i].ID, err))
			return
		}
		net, err := readNetDev(netPaths[i])
		if err != nil {
			fail(fmt.Sprintf("%s: %v", list[i].ID, err))
			return
		}
		if keep {
			last[i] = extract(list[i].ID, stats, net)
		}
	}

	// best runs fn (one round over every container) -rounds times per
	// timing, -repeats timings, and returns the fastest in µs per container
	// per round.
	best := func(fn func()) float64 {
		fastest := time.Duration(1<<63 - 1)
		for r := 0; r < *repeats; r++ {
			start := time.Now()
			for k := 0; k < *rounds; k++ {
				fn()
			}
			if elapsed := time.Since(start); elapsed < fastest {
				fastest = elapsed
			}
		}
		return float64(fastest.Nanoseconds()) / 1e3 / float64(*rounds*len(list))
	}

	// With -rounds 0 only the values are read (one round), for a
	// cross-check bracketed closely by two cgstats samples.
	var total, getStats, netDev *float64
	if *rounds > 0 {
		// One untimed round first: the runtime's and the kernel's caches
		// warm, as for cgstats (whose first two ticks are not timed either).
		for i := range list {
			sample(i, false)
		}
		t := best(func() {
			for i := range list {
				sample(i, false)
			}
		})
		g := best(func() {
			for _, m := range managers {
				_, _ = m.GetStats()
			}
		})
		n := best(func() {
			for _, path := range netPaths {
				_, _ = readNetDev(path)
			}
		})
		total, getStats, netDev = &t, &g, &n
	}
	// The values: one more round, right after the timings, kept.
	start := time.Now()
	for i := range list {
		sample(i, true)
	}
	valuesSeconds := time.Since(start).Seconds()

	out := map[string]interface{}{
		"runc":                 "1.1.5 (Debian golang-github-opencontainers-runc-dev)",
		"go":                   runtime.Version(),
		"containers":           len(list),
		"rounds":               *rounds,
		"repeats":              *repeats,
		"us_per_container":     total,
		"getstats_us":          getStats,
		"netdev_us":            netDev,
		"values_round_seconds": valuesSeconds,
		"error_count":          errorCount,
		"errors":               errors,
		"values":               last,
	}
	var buffer bytes.Buffer
	encoder := json.NewEncoder(&buffer)
	encoder.SetIndent("", " ")
	if err := encoder.Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "runc_stats:", err)
		os.Exit(1)
	}
	os.Stdout.Write(buffer.Bytes())
}
