// Command falcon-transfer is an Open-Falcon transfer for cgstats' tests.
//
// It serves Go's net/rpc with the net/rpc/jsonrpc codec, as falcon-plus's
// transfer does (modules/transfer/receiver/rpc), with the same item type, the
// same response and the same checks on items: an invalid item is counted in
// Invalid and dropped. Instead of forwarding to graph and judge, it appends
// each accepted item, as the transfer would pass it on (tags normalised,
// timestamp replaced when out of range), as one JSON line to the -out file,
// in one write(2) before it replies: a reply means recorded, also if the
// process is killed right after (not across a power cut: no fsync).
//
// Usage:
//
//	falcon-transfer -listen 127.0.0.1:0 -out items.jsonl [-mode ok|silent|error|close]
//
// It prints "listening HOST:PORT" on stdout once it listens (port 0 picks one).
// Modes: ok is a transfer; silent accepts connections and reads requests but
// never answers; error answers every Transfer.Update with an error string and
// records nothing, while Transfer.Ping still succeeds (up, but not
// delivering); close closes the connection right after reading one request,
// whatever its method.
//
// Standard library only; built with GO111MODULE=off (see .ci/run).
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"net/rpc"
	"net/rpc/jsonrpc"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// MetricValue is one item as clients send it (falcon-plus common/model).
type MetricValue struct {
	Endpoint  string      `json:"endpoint"`
	Metric    string      `json:"metric"`
	Value     interface{} `json:"value"`
	Step      int64       `json:"step"`
	Type      string      `json:"counterType"`
	Tags      string      `json:"tags"`
	Timestamp int64       `json:"timestamp"`
}

// TransferResponse is Update's reply (falcon-plus common/model).
type TransferResponse struct {
	Message string
	Total   int
	Invalid int
	Latency int64
}

// NullRpcRequest is Ping's argument, SimpleRpcResponse its reply (Code 0: ok).
type NullRpcRequest struct{}

type SimpleRpcResponse struct {
	Code int `json:"code"`
}

// accepted is one recorded line.
type accepted struct {
	Endpoint    string      `json:"endpoint"`
	Metric      string      `json:"metric"`
	Value       interface{} `json:"value"`
	Step        int64       `json:"step"`
	CounterType string      `json:"counterType"`
	Tags        string      `json:"tags"`
	Timestamp   int64       `json:"timestamp"`
}

// recorder appends lines to the -out file; calls run concurrently.
type recorder struct {
	mu   sync.Mutex
	file *os.File
}

func (r *recorder) write(items []accepted) error {
	if len(items) == 0 {
		return nil
	}
	var buf strings.Builder
	for _, item := range items {
		line, err := json.Marshal(item)
		if err != nil {
			return err
		}
		buf.Write(line)
		buf.WriteByte('\n')
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	_, err := io.WriteString(r.file, buf.String())
	return err
}

// endTornLine ends the file's last line if a previous process was killed in
// the middle of writing it, so this process's first record starts a line of
// its own. The torn record was never acknowledged (the reply follows the
// write), so the sender sends it again elsewhere; readers skip it.
func endTornLine(path string, file *os.File) error {
	reader, err := os.Open(path)
	if err != nil {
		return err
	}
	defer reader.Close()
	info, err := reader.Stat()
	if err != nil || info.Size() == 0 {
		return err
	}
	last := make([]byte, 1)
	if _, err := reader.ReadAt(last, info.Size()-1); err != nil {
		return err
	}
	if last[0] != '\n' {
		_, err = file.Write([]byte{'\n'})
	}
	return err
}

// Transfer is the RPC service, registered as "Transfer".
type Transfer struct {
	out       *recorder
	errorMode bool
}

func (t *Transfer) Ping(req NullRpcRequest, resp *SimpleRpcResponse) error {
	resp.Code = 0
	return nil
}

func (t *Transfer) Update(args []*MetricValue, reply *TransferResponse) error {
	start := time.Now()
	if t.errorMode {
		return errors.New("falcon-transfer: -mode error refuses every update")
	}
	items := make([]accepted, 0, len(args))
	invalid := 0
	for _, v := range args {
		item, ok := check(v, start.Unix())
		if !ok {
			invalid++
			continue
		}
		items = append(items, item)
	}
	if err := t.out.write(items); err != nil {
		return fmt.Errorf("falcon-transfer: recording: %v", err)
	}
	reply.Message = "ok"
	reply.Total = len(args)
	reply.Invalid = invalid
	reply.Latency = time.Since(start).Milliseconds()
	return nil
}

// check applies the transfer's rules to one item; false means invalid.
func check(v *MetricValue, now int64) (accepted, bool) {
	if v == nil || v.Metric == "kernel.hostname" || v.Metric == "" || v.Endpoint == "" {
		return accepted{}, false
	}
	if v.Type != "GAUGE" && v.Type != "COUNTER" && v.Type != "DERIVE" {
		return accepted{}, false
	}
	if s, isString := v.Value.(string); isString && s == "" {
		return accepted{}, false
	}
	if v.Step <= 0 || len(v.Metric)+len(v.Tags) > 510 {
		return accepted{}, false
	}
	var value interface{}
	switch x := v.Value.(type) {
	case float64: // every JSON number decodes as float64 into an interface{}
		value = x
	case string:
		f, err := strconv.ParseFloat(x, 64)
		if err != nil {
			return accepted{}, false
		}
		value = f
		if math.IsNaN(f) || math.IsInf(f, 0) {
			value = x // the transfer takes "NaN" from a string; JSON cannot hold it as a number
		}
	default:
		return accepted{}, false
	}
	timestamp := v.Timestamp
	if timestamp <= 0 || timestamp > 2*now {
		timestamp = now
	}
	return accepted{v.Endpoint, v.Metric, value, v.Step, v.Type, normalTags(v.Tags), timestamp}, true
}

// normalTags is the transfer's reading of a tag string: spaces removed,
// pieces without "=" dropped, a repeated key keeps its last value, then the
// pairs sorted by key and joined by ",".
func normalTags(tags string) string {
	pairs := map[string]string{}
	for _, piece := range strings.Split(strings.ReplaceAll(tags, " ", ""), ",") {
		if i := strings.IndexByte(piece, '='); i >= 0 {
			pairs[piece[:i]] = piece[i+1:]
		}
	}
	keys := make([]string, 0, len(pairs))
	for key := range pairs {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	for i, key := range keys {
		keys[i] = key + "=" + pairs[key]
	}
	return strings.Join(keys, ",")
}

func serve(conn net.Conn, server *rpc.Server, mode string) {
	if tcp, ok := conn.(*net.TCPConn); ok {
		tcp.SetKeepAlive(true)
		tcp.SetKeepAlivePeriod(30 * time.Second)
	}
	switch mode {
	case "silent":
		io.Copy(io.Discard, conn) // read everything, answer nothing, until the peer closes
		conn.Close()
	case "close":
		var request json.RawMessage
		json.NewDecoder(conn).Decode(&request)
		conn.Close()
	default:
		server.ServeCodec(jsonrpc.NewServerCodec(conn))
	}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "TCP address to listen on (port 0: any free port)")
	out := flag.String("out", "", "file to append accepted items to, one JSON line each (required)")
	mode := flag.String("mode", "ok", "ok, silent, error or close")
	flag.Parse()
	switch *mode {
	case "ok", "silent", "error", "close":
	default:
		log.Fatalf("falcon-transfer: unknown -mode %q", *mode)
	}
	if *out == "" {
		log.Fatal("falcon-transfer: -out is required")
	}
	file, err := os.OpenFile(*out, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		log.Fatalf("falcon-transfer: %v", err)
	}
	if err := endTornLine(*out, file); err != nil {
		log.Fatalf("falcon-transfer: %v", err)
	}
	server := rpc.NewServer()
	if err := server.Register(&Transfer{out: &recorder{file: file}, errorMode: *mode == "error"}); err != nil {
		log.Fatalf("falcon-transfer: %v", err)
	}
	addr, err := net.ResolveTCPAddr("tcp", *listen)
	if err != nil {
		log.Fatalf("falcon-transfer: %v", err)
	}
	// Go sets SO_REUSEADDR: a restarted transfer gets its old port back at once.
	listener, err := net.ListenTCP("tcp", addr)
	if err != nil {
		log.Fatalf("falcon-transfer: %v", err)
	}
	fmt.Printf("listening %s\n", listener.Addr())
	for {
		conn, err := listener.Accept()
		if err != nil {
			log.Printf("falcon-transfer: accept: %v", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go serve(conn, server, *mode)
	}
}
