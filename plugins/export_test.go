package plugins

// LinkAddrsStrict is the per-link dump of LinkAddrs on a NETLINK_ROUTE socket, without
// its fallback.
var LinkAddrsStrict = linkAddrsStrict

// HandleRouteFd is the descriptor of a handle's NETLINK_ROUTE socket, as LinkAddrs finds it.
var HandleRouteFd = handleRouteFd

// ErrNoStrictDump is what LinkAddrsStrict returns on a kernel that cannot filter.
var ErrNoStrictDump = errNoStrictDump
