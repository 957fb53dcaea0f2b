package plugins

// LinkAddrsStrict is the per-link dump of LinkAddrs without its fallback.
var LinkAddrsStrict = linkAddrsStrict

// ErrNoStrictDump is what LinkAddrsStrict returns on a kernel that cannot filter.
var ErrNoStrictDump = errNoStrictDump
