package cli

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// DocsPath is where `moor gendocs` writes by default, relative to the repository root.
const DocsPath = "docs/cli.md"

const docsHeader = `# moor command line

<!-- Generated from the commands' help by ` + "`go generate ./cmd/moor`" + ` (moor gendocs); do not edit. -->

` + "`moor`" + ` gives Docker's view of the moor networks of a CNI runtime and checks them against the
kernel. Exit codes: 0 success, 1 error, 2 usage error (unknown command or flag, wrong
arguments, a flag value that cannot work), 3 ` + "`moor doctor`" + ` found problems. Errors go to
stderr. Shell completion: ` + "`moor completion bash|zsh|fish|powershell`" + `.
`

func gendocsCmd(root *cobra.Command) *cobra.Command {
	return &cobra.Command{
		Use:    "gendocs [PATH]",
		Short:  "Write the command reference in Markdown (default " + DocsPath + "; - for stdout)",
		Hidden: true,
		Args:   usageArgs(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			var b bytes.Buffer
			if err := WriteDocs(&b, root); err != nil {
				return err
			}
			path := DocsPath
			if len(args) == 1 {
				path = args[0]
			}
			if path == "-" {
				_, err := cmd.OutOrStdout().Write(b.Bytes())
				return err
			}
			const docMode = 0o644
			return os.WriteFile(path, b.Bytes(), docMode)
		},
	}
}

// WriteDocs writes the reference of every visible command under root.
func WriteDocs(w io.Writer, root *cobra.Command) error {
	var b bytes.Buffer
	b.WriteString(docsHeader)
	// What Execute would add, so that the output does not depend on whether it ran.
	root.InitDefaultCompletionCmd()
	root.InitDefaultVersionFlag()
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" {
			return
		}
		c.InitDefaultHelpFlag()
		docCommand(&b, c)
		for _, sub := range c.Commands() {
			if sub.IsAvailableCommand() {
				walk(sub)
			}
		}
	}
	walk(root)
	_, err := w.Write(b.Bytes())
	return err
}

func docCommand(b *bytes.Buffer, c *cobra.Command) {
	fmt.Fprintf(b, "\n## %s\n\n%s\n", c.CommandPath(), c.Short)
	if c.Long != "" {
		fmt.Fprintf(b, "\n```text\n%s\n```\n", strings.TrimSpace(c.Long))
	}
	if c.Runnable() {
		fmt.Fprintf(b, "\nUsage: `%s`\n", c.UseLine())
	}
	if len(c.Aliases) > 0 {
		fmt.Fprintf(b, "\nAliases: %s\n", strings.Join(c.Aliases, ", "))
	}
	if c.Example != "" {
		fmt.Fprintf(b, "\nExamples:\n\n```sh\n%s\n```\n", c.Example)
	}
	if flags := flagUsages(c.NonInheritedFlags()); flags != "" {
		fmt.Fprintf(b, "\nFlags:\n\n```text\n%s```\n", flags)
	}
	if c.HasParent() && c.HasAvailableInheritedFlags() {
		fmt.Fprintf(b, "\nGlobal flags: see [moor](#moor).\n")
	}
}

// flagUsages lists flags without -h/--help, which every command has.
func flagUsages(fs *pflag.FlagSet) string {
	out := pflag.NewFlagSet("doc", pflag.ContinueOnError)
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Name != "help" {
			out.AddFlag(f)
		}
	})
	return out.FlagUsagesWrapped(0)
}
