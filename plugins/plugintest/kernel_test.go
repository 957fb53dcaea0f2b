package plugintest

import "testing"

// On every kernel each probe answers, and answers the same when asked again; the VM lane's
// kernel has them all (RequireKernel fails there otherwise).
func TestKernelProbes(t *testing.T) {
	RequireRoot(t)
	for f := range probes {
		first := KernelHas(f)
		if again := KernelHas(f); (first == nil) != (again == nil) {
			t.Errorf("%s: %v, then %v", f, first, again)
		}
		t.Logf("%s: %v", f, first)
	}
	if err := KernelHas("teleport"); err == nil {
		t.Error("an unknown feature was reported present")
	}
}

func TestVMLaneKernelFeatures(t *testing.T) {
	for f := range probes {
		t.Run(string(f), func(t *testing.T) { RequireKernel(t, f) })
	}
}
