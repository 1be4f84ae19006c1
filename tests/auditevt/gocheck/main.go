// gocheck reads Event JSON lines on stdin with encoding/json into the canonical struct and
// writes each back as Go marshals it, one line per input line. An input Go cannot unmarshal
// prints "ERROR: <reason>" instead. Built from tests/data/event.go, the contract's own file.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"

	"gocheck/auditevt"
)

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<24)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for in.Scan() {
		var ev auditevt.Event
		if err := json.Unmarshal(in.Bytes(), &ev); err != nil {
			fmt.Fprintf(out, "ERROR: %v\n", err)
			continue
		}
		b, err := json.Marshal(ev)
		if err != nil {
			fmt.Fprintf(out, "ERROR: %v\n", err)
			continue
		}
		out.Write(b)
		out.WriteByte('\n')
	}
}
