// docker_api decodes Docker Engine stats documents (GET /containers/{id}/stats)
// into Docker's own API type, github.com/docker/docker/api/types.StatsJSON, and
// prints what `docker stats` would show for each.
//
// Input: one JSON document per line on stdin. Output: one JSON object per line,
// in the same order:
//
//	{"ok": true, "cli": {...}}     the document decodes, re-encodes to itself, and the figures
//	{"ok": false, "error": "..."}  why not
//
// A document is refused when it has a key StatsJSON does not know
// (DisallowUnknownFields), a value of the wrong type, or when json.Marshal of
// the decoded value is not the document itself: a missing key, a null where Go
// writes [] or the reverse, a zero Go would omit (omitempty), a time not in Go's
// RFC 3339 form.
//
// The figures follow docker/cli's cli/command/container/stats_helpers.go
// (calculateCPUPercentUnix, calculateMemUsageUnixNoCache,
// calculateMemPercentUnixNoCache, calculateBlockIO, calculateNetwork),
// written again here from their definitions.
//
// Built with GO111MODULE=off against Debian's golang-github-docker-docker-dev
// (GOPATH=/usr/share/gocode), as tests/unit/test_docker_stats.py does.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"sort"

	"github.com/docker/docker/api/types"
)

// figures is what `docker stats` prints for a container, before formatting.
type figures struct {
	CPUPercent    float64 `json:"cpu_percent"`
	MemUsage      float64 `json:"mem_usage"`
	MemLimit      float64 `json:"mem_limit"`
	MemPercent    float64 `json:"mem_percent"`
	NetRx         float64 `json:"net_rx"`
	NetTx         float64 `json:"net_tx"`
	BlockRead     uint64  `json:"block_read"`
	BlockWrite    uint64  `json:"block_write"`
	PidsCurrent   uint64  `json:"pids_current"`
	OnlineCPUs    uint32  `json:"online_cpus"`
	SystemDeltaNs float64 `json:"system_delta_ns"`
	CPUDeltaNs    float64 `json:"cpu_delta_ns"`
}

type result struct {
	OK    bool     `json:"ok"`
	Error string   `json:"error,omitempty"`
	CLI   *figures `json:"cli,omitempty"`
}

// cpuPercent: the container's CPU time over the host's, times the CPUs, in %;
// 0 unless both deltas are positive. Without online_cpus, the length of percpu_usage.
func cpuPercent(previous, current types.CPUStats) (float64, float64, float64) {
	cpuDelta := float64(current.CPUUsage.TotalUsage) - float64(previous.CPUUsage.TotalUsage)
	systemDelta := float64(current.SystemUsage) - float64(previous.SystemUsage)
	online := float64(current.OnlineCPUs)
	if online == 0 {
		online = float64(len(current.CPUUsage.PercpuUsage))
	}
	percent := 0.0
	if systemDelta > 0 && cpuDelta > 0 {
		percent = cpuDelta / systemDelta * online * 100
	}
	return percent, cpuDelta, systemDelta
}

// memUsage: usage less inactive file pages, total_inactive_file on v1 (when the
// key is present) or inactive_file, only when smaller than usage.
func memUsage(memory types.MemoryStats) float64 {
	if inactive, v1 := memory.Stats["total_inactive_file"]; v1 && inactive < memory.Usage {
		return float64(memory.Usage - inactive)
	}
	if inactive := memory.Stats["inactive_file"]; inactive < memory.Usage {
		return float64(memory.Usage - inactive)
	}
	return float64(memory.Usage)
}

// blockIO sums io_service_bytes_recursive by the first letter of op: r/R read, w/W write.
func blockIO(blkio types.BlkioStats) (uint64, uint64) {
	var read, write uint64
	for _, entry := range blkio.IoServiceBytesRecursive {
		if entry.Op == "" {
			continue
		}
		switch entry.Op[0] {
		case 'r', 'R':
			read += entry.Value
		case 'w', 'W':
			write += entry.Value
		}
	}
	return read, write
}

func network(networks map[string]types.NetworkStats) (float64, float64) {
	var rx, tx float64
	for _, counters := range networks {
		rx += float64(counters.RxBytes)
		tx += float64(counters.TxBytes)
	}
	return rx, tx
}

func compute(stats *types.StatsJSON) *figures {
	percent, cpuDelta, systemDelta := cpuPercent(stats.PreCPUStats, stats.CPUStats)
	used := memUsage(stats.MemoryStats)
	limit := float64(stats.MemoryStats.Limit)
	memPercent := 0.0
	if limit != 0 {
		memPercent = used / limit * 100
	}
	rx, tx := network(stats.Networks)
	read, write := blockIO(stats.BlkioStats)
	return &figures{
		CPUPercent:    percent,
		MemUsage:      used,
		MemLimit:      limit,
		MemPercent:    memPercent,
		NetRx:         rx,
		NetTx:         tx,
		BlockRead:     read,
		BlockWrite:    write,
		PidsCurrent:   stats.PidsStats.Current,
		OnlineCPUs:    stats.CPUStats.OnlineCPUs,
		SystemDeltaNs: systemDelta,
		CPUDeltaNs:    cpuDelta,
	}
}

// generic decodes JSON into maps, slices and json.Number, for a comparison
// that ignores key order and number spelling but nothing else.
func generic(data []byte) (interface{}, error) {
	decoder := json.NewDecoder(bytes.NewReader(data))
	decoder.UseNumber()
	var value interface{}
	err := decoder.Decode(&value)
	return value, err
}

// difference names the first place where want and got differ ("" if none).
func difference(path string, want, got interface{}) string {
	switch w := want.(type) {
	case map[string]interface{}:
		g, ok := got.(map[string]interface{})
		if !ok {
			return fmt.Sprintf("%s: document has an object, Go writes %s", path, show(got))
		}
		keys := make([]string, 0, len(w)+len(g))
		for key := range w {
			keys = append(keys, key)
		}
		for key := range g {
			if _, seen := w[key]; !seen {
				keys = append(keys, key)
			}
		}
		sort.Strings(keys)
		for _, key := range keys {
			wv, inWant := w[key]
			gv, inGot := g[key]
			switch {
			case !inGot:
				return fmt.Sprintf("%s.%s: in the document (%s), Go omits it", path, key, show(wv))
			case !inWant:
				return fmt.Sprintf("%s.%s: missing from the document, Go writes %s", path, key, show(gv))
			}
			if d := difference(path+"."+key, wv, gv); d != "" {
				return d
			}
		}
		return ""
	case []interface{}:
		g, ok := got.([]interface{})
		if !ok || len(g) != len(w) {
			return fmt.Sprintf("%s: document has %s, Go writes %s", path, show(want), show(got))
		}
		for i := range w {
			if d := difference(fmt.Sprintf("%s[%d]", path, i), w[i], g[i]); d != "" {
				return d
			}
		}
		return ""
	}
	if !reflect.DeepEqual(want, got) {
		return fmt.Sprintf("%s: document has %s, Go writes %s", path, show(want), show(got))
	}
	return ""
}

func show(value interface{}) string {
	data, err := json.Marshal(value)
	if err != nil {
		return fmt.Sprintf("%v", value)
	}
	if len(data) > 120 {
		return string(data[:120]) + "..."
	}
	return string(data)
}

func check(line []byte) result {
	decoder := json.NewDecoder(bytes.NewReader(line))
	decoder.DisallowUnknownFields()
	var stats types.StatsJSON
	if err := decoder.Decode(&stats); err != nil {
		return result{Error: "decode: " + err.Error()}
	}
	encoded, err := json.Marshal(&stats)
	if err != nil {
		return result{Error: "encode: " + err.Error()}
	}
	want, err := generic(line)
	if err != nil {
		return result{Error: "document: " + err.Error()}
	}
	got, err := generic(encoded)
	if err != nil {
		return result{Error: "re-encoded: " + err.Error()}
	}
	if d := difference("$", want, got); d != "" {
		return result{Error: "not what Go writes: " + d}
	}
	return result{OK: true, CLI: compute(&stats)}
}

func main() {
	scanner := bufio.NewScanner(os.Stdin)
	scanner.Buffer(make([]byte, 1<<20), 1<<26)
	out := json.NewEncoder(os.Stdout)
	for scanner.Scan() {
		line := bytes.TrimSpace(scanner.Bytes())
		if len(line) == 0 {
			continue
		}
		if err := out.Encode(check(line)); err != nil {
			fmt.Fprintln(os.Stderr, "docker_api:", err)
			os.Exit(1)
		}
	}
	if err := scanner.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "docker_api:", err)
		os.Exit(1)
	}
}
