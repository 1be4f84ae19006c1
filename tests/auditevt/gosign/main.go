// gosign runs the Go verifier of docs/telemetry.md on cases written by the Python tests: one
// JSON object a line on stdin, one line out for each: "OK" or "ERROR: <reason>".
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"gosign/webhook"
)

type check struct {
	Secrets   []string `json:"secrets"`
	ID        string   `json:"id"`
	Timestamp string   `json:"timestamp"`
	Signature string   `json:"signature"`
	Body      []byte   `json:"body"` // base64 in JSON
	Now       int64    `json:"now"`
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<26)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for in.Scan() {
		var c check
		if err := json.Unmarshal(in.Bytes(), &c); err != nil {
			fmt.Fprintf(out, "ERROR: bad input: %v\n", err)
			continue
		}
		err := webhook.Verify(c.Secrets, c.ID, c.Timestamp, c.Signature, c.Body, time.Unix(c.Now, 0))
		if err != nil {
			fmt.Fprintf(out, "ERROR: %v\n", err)
		} else {
			fmt.Fprintln(out, "OK")
		}
	}
}
