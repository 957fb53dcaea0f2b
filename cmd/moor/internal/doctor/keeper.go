package doctor

import (
	"fmt"
	"os"
	"time"

	"github.com/moornet/moor/plugins/firewall"
	"github.com/moornet/moor/plugins/firewall/keeper"
)

// keeper reports the firewall keeper (`moor-dns keep-firewall`): whether one runs for the
// networks the firewall State records, and the repairs it made after firewall reloads.
func (d *Doctor) keeper(r *Report) {
	dir := firewall.DefaultStateDir(os.Getenv)
	nets, err := firewall.State{Dir: dir}.Load()
	if err != nil {
		d.add(r, Finding{Severity: Problem, Area: AreaFirewall, Message: "firewall state unreadable: " + err.Error(),
			Advice: "the keeper cannot repair the rules; remove the broken file, the next ADD writes it again"})
		return
	}
	running := keeper.Running(dir)
	st, ok, err := keeper.ReadStats(dir)
	switch {
	case err != nil:
		d.add(r, Finding{Severity: Info, Area: AreaFirewall, Message: "firewall keeper stats unreadable: " + err.Error()})
	case ok && st.Repairs > 0:
		d.add(r, Finding{Severity: Info, Area: AreaFirewall, Message: fmt.Sprintf(
			"firewall keeper repaired moor's rules %d time(s), last at %s: %s",
			st.Repairs, st.LastRepair.Format(time.RFC3339), st.LastWhat)})
	}
	if ok && running && st.LastError != "" {
		d.add(r, Finding{Severity: Problem, Area: AreaFirewall, Message: "firewall keeper cannot repair: " + st.LastError,
			Advice: "see /var/log/moor/moor-dns-keep-firewall.log"})
	}
	switch {
	case len(nets) == 0:
	case running:
		d.add(r, Finding{Severity: OK, Area: AreaFirewall, Message: fmt.Sprintf("firewall keeper runs for %d network(s)", len(nets))})
	default:
		d.add(r, Finding{Severity: Info, Area: AreaFirewall, Message: "no firewall keeper runs: moor's rules will not come back by themselves after a firewall reload",
			Advice: "the next ADD starts one (moor-dns must be in CNI_PATH), or run `moor-dns keep-firewall`"})
	}
}
