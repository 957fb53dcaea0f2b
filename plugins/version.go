package plugins

import "github.com/containernetworking/cni/pkg/version"

// Version is moor's release, stamped at build time with
// -ldflags "-X github.com/moornet/moor/plugins.Version=<version>".
var Version = "dev"

// SupportedVersions are the CNI spec versions every moor plugin answers.
var SupportedVersions = []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

// pluginInfo is what VERSION reports.
var pluginInfo = version.PluginSupports(SupportedVersions...)

// minimumVersion is the oldest config version that may use a verb.
var minimumVersion = map[string]string{
	"CHECK":  "0.4.0",
	"GC":     "1.1.0",
	"STATUS": "1.1.0",
}

// About is the one-line description a binary prints when run without CNI_COMMAND.
func About(name string) string { return name + ": moor " + Version }
