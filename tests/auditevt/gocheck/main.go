// gocheck reads JSON lines on stdin with encoding/json and writes each back as Go marshals it,
// one line per input line. An input Go cannot unmarshal prints "ERROR: <reason>" instead.
//
//	gocheck        each line is an auditevt.Event (built from tests/data/event.go, the
//	               contract's own file)
//	gocheck any    each line is decoded into an any, as Event.Changes is
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"

	"gocheck/auditevt"
)

func main() {
	intoAny := len(os.Args) > 1 && os.Args[1] == "any"
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<24)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for in.Scan() {
		var b []byte
		var err error
		if intoAny {
			var v any
			if err = json.Unmarshal(in.Bytes(), &v); err == nil {
				b, err = json.Marshal(v)
			}
		} else {
			var ev auditevt.Event
			if err = json.Unmarshal(in.Bytes(), &ev); err == nil {
				b, err = json.Marshal(ev)
			}
		}
		if err != nil {
			fmt.Fprintf(out, "ERROR: %v\n", err)
			continue
		}
		out.Write(b)
		out.WriteByte('\n')
	}
}
