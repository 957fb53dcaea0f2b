package plugintest

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// Iperf measures TCP throughput from client to an iperf3 server started in server,
// listening on addr, for seconds (the first second, TCP's slow start and a shaper's
// burst, is left out). It returns what the server received, in bits per second. Both
// iperf3 processes are started here and end with the run.
func Iperf(server, client ns.NetNS, addr string, seconds int) (float64, error) {
	port := strconv.Itoa(20000 + rand.IntN(20000))
	srv := exec.Command("nsenter", "--net="+server.Path(), "iperf3", "-s", "-1", "-p", port)
	if err := srv.Start(); err != nil {
		return 0, fmt.Errorf("starting iperf3 -s: %w", err)
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	var r iperfResult
	// The server needs a moment to listen: retry the connection, not the measurement.
	// iperf3 -J may exit 0 with the failure in its "error" field.
	for deadline := time.Now().Add(10 * time.Second); ; {
		out, err := exec.Command("nsenter", "--net="+client.Path(), "iperf3", "-c", addr, "-p", port,
			"-t", strconv.Itoa(seconds+1), "-O", "1", "-J").Output()
		r = iperfResult{}
		if jerr := json.Unmarshal(out, &r); jerr != nil && err == nil {
			err = fmt.Errorf("iperf3 output: %w", jerr)
		}
		if err == nil && r.Error != "" {
			err = errors.New(r.Error)
		}
		if err == nil {
			break
		}
		if time.Now().After(deadline) || !strings.Contains(err.Error(), "connect") && r.Error == "" {
			return 0, fmt.Errorf("iperf3 -c %s: %w: %s", addr, err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return r.End.SumReceived.BitsPerSecond, nil
}

type iperfResult struct {
	Error string `json:"error"`
	End   struct {
		SumReceived struct {
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
}
