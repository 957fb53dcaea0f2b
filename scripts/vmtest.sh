#!/usr/bin/env bash
# The VM lane: runs moor's kernel tests on Debian's stock kernel (the one linux-image-amd64
# depends on, 6.1 LTS on Debian 12) in a qemu guest, because the machines that run CI may
# lack kernel features users' kernels have (802.1q, bridge VLAN filtering, ipvlan, ...).
#
# How: the kernel package is fetched with `apt-get download` and unpacked once into a cache
# outside the clone ($MOOR_VMTEST_CACHE, default /var/cache/moor-vmtest), so every fresh
# clone reuses it. The test binaries are built here with `go test -c` (the guest is emulated:
# building there would take minutes). The guest boots a tiny busybox initramfs holding only
# the modules that mount 9p; it then mounts this machine's root read-only over 9p (tmpfs on
# /run, /tmp and /var), takes every other module from the cached kernel tree through that
# share (kmod's modprobe, also for the kernel's own module requests), and runs the test
# binaries with go test's verbose output on the serial console and into a second,
# writable 9p share. The host prints pass/fail per test, the number of tests and the
# kernel version, and fails when a test failed or the guest did not finish.
#
# Which tests: every test that calls plugintest.RequireKernel (the tests that skip on a
# kernel without the feature they need; in the guest MOOR_VMTEST=1 turns that skip into a
# failure, so the run list here and the skip list elsewhere are the same set) plus the
# bridge, macvlan and overlay kernel tests named in plan below. MOOR_VMTEST_RUN="pkg=regex
# ..." replaces the plan (e.g. MOOR_VMTEST_RUN="./integration=TestBridgeVlan").
# MOOR_VMTEST_EXEC="./pkg ARG..." runs no test: it builds the command in ./pkg on the host
# and runs it in the guest with ARG... from the repository's root, printing its output
# (scripts/bench-overlay.sh VM=1 runs scripts/overlaybench this way); the lane fails when
# the command does.
#
# qemu runs with TCG (-accel tcg -cpu max): KVM is present on the CI machines but fails for
# a guest. When the archive has no kernel package the lane says so and fails: a lane that
# silently did nothing would read as a pass. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
cache=${MOOR_VMTEST_CACHE:-/var/cache/moor-vmtest}
guest_timeout=${MOOR_VMTEST_TIMEOUT:-900} # seconds for the whole guest run
guest_cpu=${MOOR_VMTEST_CPU:-max}          # qemu's -cpu model (the bench compares models)

die() { echo "vmtest: $*" >&2; exit 1; }

# shellcheck source=lib.sh
. scripts/lib.sh
install_missing vmtest qemu-system-x86 busybox-static kmod iproute2 iperf3 openssl # the last two: bench-overlay.sh VM=1
mkdir -p "$cache"
exec 9>"$cache/lock"
flock 9 # one fetch or run at a time per cache

# --- the kernel ---------------------------------------------------------------------
kpkg=${MOOR_VMTEST_KERNEL_PKG:-}
find_kpkg() { apt-cache depends linux-image-amd64 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ {print $2; exit}'; }
if [ -z "$kpkg" ]; then
	kpkg=$(find_kpkg)
	if [ -z "$kpkg" ]; then
		DEBIAN_FRONTEND=noninteractive apt-get update -qq || true
		kpkg=$(find_kpkg)
	fi
fi
[ -n "$kpkg" ] || die "CANNOT BUILD THE VM LANE: the archive has no linux-image-amd64 depending on a linux-image-<version>-amd64 package (apt-cache depends linux-image-amd64). No kernel test ran in a VM."
kdir=$cache/$kpkg
if [ ! -e "$kdir/ready" ]; then
	echo "vmtest: fetching $kpkg into $cache"
	rm -rf "$kdir" "$cache/.fetch"
	mkdir -p "$cache/.fetch"
	(cd "$cache/.fetch" && apt-get download -q "$kpkg" 2>&1 | grep -v "unsandboxed" || true)
	deb=$( (ls "$cache"/.fetch/*.deb 2>/dev/null || true) | head -1)
	[ -n "$deb" ] || die "CANNOT BUILD THE VM LANE: apt-get download $kpkg fetched nothing. No kernel test ran in a VM."
	dpkg-deb -x "$deb" "$cache/.fetch/root"
	mods=$( (ls -d "$cache"/.fetch/root/lib/modules/* "$cache"/.fetch/root/usr/lib/modules/* 2>/dev/null || true) | head -1)
	[ -n "$mods" ] || die "$kpkg has no lib/modules"
	kver=$(basename "$mods")
	if [ "$mods" != "$cache/.fetch/root/lib/modules/$kver" ]; then
		mkdir -p "$cache/.fetch/root/lib/modules"
		mv "$mods" "$cache/.fetch/root/lib/modules/$kver"
	fi
	depmod -b "$cache/.fetch/root" "$kver" # the package ships no modules.dep
	mv "$cache/.fetch/root" "$kdir"
	rm -rf "$cache/.fetch"
	echo "$kver" >"$kdir/ready"
fi
kver=$(cat "$kdir/ready")
vmlinuz=$kdir/boot/vmlinuz-$kver
[ -f "$vmlinuz" ] || die "no $vmlinuz in the cache; remove $kdir to fetch it again"

# --- what to run --------------------------------------------------------------------
# Packages and the kernel tests to run in each: a plain bridge test with packets (the
# marked VLAN tests drive the rest of the bridge and macvlan paths, two macvlan containers
# pinging each other included), and the overlay's
# kernel packages (VXLAN devices between two hosts, masquerade). Kept to what fits in a few
# minutes of emulated CPU; the rest of the suite runs on the host. The overlay's plugin and
# lab tests are left out, except the WireGuard lab (marked, it has no other kernel to run
# on): it runs its lab with lab.Options.StartBudget under MOOR_VMTEST=1 (etcd, agents and
# DNS sidecars get minutes to start, the hosts' etcd clients 30 s per request), since an
# emulated CPU starts them far slower than the lab's defaults allow.
plan=(
	"./integration=^(TestBridgeReferenceConfigUnchanged)\$"
	"./overlay/vxlan=."
	"./overlay/masq=."
)
[ -z "${MOOR_VMTEST_RUN:-}" ] || read -r -a plan <<<"$MOOR_VMTEST_RUN"
exec_cmd=()
[ -z "${MOOR_VMTEST_EXEC:-}" ] || { read -r -a exec_cmd <<<"$MOOR_VMTEST_EXEC"; plan=(); }

# markedTests PKG: the top-level tests of PKG whose body calls RequireKernel.
marked_tests() {
	awk '/^func Test[A-Za-z0-9_]*\(/ { name = $2; sub(/\(.*/, "", name) }
	     /RequireKernel\(/ && name != "" { print name }' "$1"/*_test.go 2>/dev/null | sort -u
}
# Add the marked tests of every package that has some, also of packages not in plan.
declare -A regex=()
order=()
for entry in "${plan[@]}"; do
	pkg=${entry%%=*}
	regex[$pkg]=${entry#*=}
	order+=("$pkg")
done
if [ -z "${MOOR_VMTEST_RUN:-}" ] && [ ${#exec_cmd[@]} = 0 ]; then
	while read -r dir; do
		pkg=./$dir
		names=$(marked_tests "$dir" | paste -sd'|')
		[ -n "$names" ] || continue
		if [ -n "${regex[$pkg]:-}" ]; then
			regex[$pkg]="${regex[$pkg]}|^($names)\$"
		else
			regex[$pkg]="^($names)\$"
			order+=("$pkg")
		fi
	done < <(git ls-files '*_test.go' | xargs grep -l 'RequireKernel(' | xargs -n1 dirname | sort -u)
fi

# --- build on the host --------------------------------------------------------------
work=$(mktemp -d /tmp/moor-vmtest.XXXXXX)
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/bin" "$work/out" "$work/pkgs"
echo "vmtest: building test binaries and moor binaries on the host"
BIN_DIR="$work/bin/moor" bash scripts/build.sh vmtest >/dev/null
: >"$work/plan"
i=0
for pkg in "${order[@]}"; do
	i=$((i + 1))
	name=$(printf '%02d-%s' "$i" "$(echo "${pkg#./}" | tr / -)")
	go test -c -o "$work/bin/$name.test" "$pkg"
	printf '%s\t%s\t%s\ttest\n' "$name" "${pkg#./}" "${regex[$pkg]}" >>"$work/plan"
done
if [ ${#exec_cmd[@]} -gt 0 ]; then
	go build -o "$work/bin/00-exec" "${exec_cmd[0]}"
	printf '%s\t%s\t%s\texec\n' 00-exec . "${exec_cmd[*]:1}" >>"$work/plan"
fi

# --- the initramfs: busybox and the modules that mount 9p ---------------------------
root=$work/initramfs
mkdir -p "$root"/{bin,sbin,proc,sys,dev,host,lib/modules}
cp /bin/busybox "$root/bin/busybox"
for applet in sh mount umount mkdir insmod chroot poweroff cat echo sleep ln uname tee grep chmod sync; do
	ln -s busybox "$root/bin/$applet"
done
: >"$root/modules.load"
for m in virtio_pci 9pnet_virtio 9p; do
	modprobe -d "$kdir" -S "$kver" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
done | awk '!seen[$0]++' | while read -r ko; do
	rel=${ko#"$kdir"}
	mkdir -p "$root$(dirname "$rel")"
	cp "$ko" "$root$rel"
	echo "$rel" >>"$root/modules.load"
done
cat >"$root/sbin/hostmodprobe" <<'EOF'
#!/bin/sh
# the kernel's module requests: kmod from the host root, modules from the cached kernel
exec /bin/chroot /host /sbin/modprobe -d /run/vmtest-kernel "$@"
EOF
chmod +x "$root/sbin/hostmodprobe"
cat >"$root/vmtest.env" <<EOF
KDIR='$kdir'
WORK='$work'
REPO='$repo'
EOF
cp scripts/vmtest-init.sh "$root/init"
chmod +x "$root/init"
(cd "$root" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1 >"$work/initrd.gz")
echo "vmtest: initramfs $(du -k "$work/initrd.gz" | cut -f1) KiB; kernel $kver ($kpkg)"

# --- boot ---------------------------------------------------------------------------
# no_timer_check: an emulated CPU on a busy host can miss the boot-time IO-APIC timer check,
# which then panics. A guest that still never reached its init is booted once more.
boot() {
	timeout "$guest_timeout" qemu-system-x86_64 -accel tcg -cpu "$guest_cpu" -m 2048 -smp 2 \
		-nographic -no-reboot -nic none \
		-kernel "$vmlinuz" -initrd "$work/initrd.gz" \
		-append "console=ttyS0 quiet panic=-1 no_timer_check" \
		-virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
		-virtfs "local,path=$work,mount_tag=work,security_model=none" \
		-virtfs "local,path=$repo,mount_tag=repo,security_model=none,readonly=on" </dev/null
}
start=$(date +%s)
set +e
boot
qrc=$?
if [ ! -s "$work/out/kernel" ] && [ "$qrc" != 124 ]; then
	echo "vmtest: the guest did not reach its init; booting once more"
	boot
	qrc=$?
fi
set -e
elapsed=$(($(date +%s) - start))

# --- results ------------------------------------------------------------------------
echo
echo "== vmtest results (guest kernel $(cat "$work/out/kernel" 2>/dev/null || echo "$kver, did not report"), ${elapsed}s in qemu)"
failed=0 total=0 passed=0 skipped=0
while IFS=$'\t' read -r name pkg _ kind; do
	log=$work/out/$name.log
	if [ "$kind" = exec ]; then
		rc=$(cat "$work/out/$name.rc" 2>/dev/null || echo none)
		echo "== output of ${exec_cmd[*]}"
		cat "$log" 2>/dev/null || echo "(no output: it did not run)"
		[ "$rc" = 0 ] || { echo "vmtest: ${exec_cmd[*]} ended with $rc"; failed=1; }
		total=$((total + 1))
		[ "$rc" != 0 ] || passed=$((passed + 1))
		continue
	fi
	rc=$(cat "$work/out/$name.rc" 2>/dev/null || echo none)
	if [ ! -f "$log" ]; then
		echo "$pkg: did not run (qemu exit $qrc)"
		failed=1
		continue
	fi
	grep -E '^--- (PASS|FAIL|SKIP)' "$log" | sed "s|^|$pkg: |" || true
	p=$(grep -cE '^--- PASS' "$log" || true)
	f=$(grep -cE '^--- FAIL' "$log" || true)
	s=$(grep -cE '^--- SKIP' "$log" || true)
	passed=$((passed + p)) skipped=$((skipped + s)) total=$((total + p + f + s))
	if [ "$rc" = none ]; then
		echo "$pkg: DID NOT FINISH (the guest stopped or timed out during it)"
		failed=1
	elif [ "$rc" != 0 ]; then
		echo "$pkg: FAILED (exit $rc)"
		failed=1
	fi
done <"$work/plan"
[ "$qrc" = 0 ] || { echo "vmtest: qemu ended with $qrc (124: timed out after ${guest_timeout}s)"; failed=1; }
echo "vmtest: $total tests ran in the guest on kernel $kver: $passed passed, $skipped skipped, $((total - passed - skipped)) failed; ${elapsed}s in the guest"
[ "$total" -gt 0 ] || failed=1
[ "$failed" = 0 ] || echo "vmtest: FAILED"
exit "$failed"
