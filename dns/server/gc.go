package server

import (
	"os"
	"runtime/debug"
)

// gcPercent is the sidecar's GOGC. The Go default, 100, lets the heap grow to twice what
// is live before a collection. The index is most of what is live (about 5 MiB at 10,000
// records) and an ADD or DEL allocates a few tens of kilobytes (the copied shards of
// withRecord, the control request, the record read), so under churn the heap reached
// twice the index and the sidecar's RSS went from 17 to 21.5 MiB at 10,000 records,
// past its 20 MiB budget. At 50 the headroom is half the live heap: the peak stays under
// 20 MiB at 10,000 records (about 18.5), and collections under churn come about twice
// as often, each as cheap as before.
//
// Why not a soft memory limit (debug.SetMemoryLimit): a fixed limit either wastes nothing
// or thrashes: once the records outgrow it, the collector runs back to back (up to half
// the CPU, beside the queries) until the limit is raised, and sizing it from the records
// means calibrating bytes per name, which move with name lengths and Go versions. A
// percentage follows the live heap, so it follows the records by construction and
// cannot thrash. The cost falls on what allocates: the common query (an A or AAAA for a
// network's name, the fast path) allocates nothing and is unaffected; queries through the
// chain (other types, forwards) allocate a few hundred bytes each and so meet a
// collection about twice as often.
const gcPercent = 50

// tuneGC sets the collector's percentage to gcPercent unless GOGC is set in the
// environment (an operator's choice wins).
func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
}
