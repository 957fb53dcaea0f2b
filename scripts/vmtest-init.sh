#!/bin/sh
# /init of the VM lane's guest (scripts/vmtest.sh builds the initramfs around it; busybox
# sh). Mounts the host's root read-only over 9p with writable tmpfs on /run, /tmp and /var,
# the cached kernel tree on /run/vmtest-kernel (for modprobe -d; the host may have no
# /lib/modules to mount on), the run's work share and the repository at the same paths as on
# the host, then runs each test binary of the plan inside that root and powers off.
# Results: go test's verbose output on the console and in $WORK/out/<name>.log, its exit
# code in <name>.rc, the kernel version in out/kernel.
set -o pipefail
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
. /vmtest.env
while read -r ko; do insmod "$ko" || echo "vmtest-init: insmod $ko failed"; done </modules.load

fail() { echo "vmtest-init: $*"; poweroff -f; }
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=524288 hostroot /host || fail "mounting the host root"
mount -t tmpfs -o mode=0755 tmpfs /host/run || fail "tmpfs on /run"
mkdir -p /host/run/vmtest-kernel
# before /var (where the cache usually is) disappears under a tmpfs
mount --bind "/host$KDIR" /host/run/vmtest-kernel || fail "binding the cached kernel tree"
for d in tmp var; do mount -t tmpfs -o mode=0755 tmpfs "/host/$d" || fail "tmpfs on /$d"; done
chmod 1777 /host/tmp
mkdir -p /host/var/tmp /host/var/lib /host/var/cache /host/run/netns "/host$WORK"
chmod 1777 /host/var/tmp
ln -s /run /host/var/run
mount -t proc proc /host/proc
mount -t sysfs sys /host/sys
mount -t devtmpfs dev /host/dev
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts devpts /host/dev/pts
mount -t tmpfs tmpfs /host/dev/shm
mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 work "/host$WORK" || fail "mounting the work share"
# The repository has its own share: a clone under /tmp or /var (where CI may put it) is
# hidden by the tmpfs above, and the test binaries run from their package's directory.
mkdir -p "/host$REPO"
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=524288 repo "/host$REPO" || fail "mounting the repository share"
echo /sbin/hostmodprobe >/proc/sys/kernel/modprobe

# What moor's tests use; the kernel would request most of them on demand anyway.
for m in bridge veth 8021q macvlan ipvlan vxlan dummy vrf geneve wireguard br_netfilter nf_tables nf_conntrack; do
	chroot /host /sbin/modprobe -d /run/vmtest-kernel "$m" || echo "vmtest-init: modprobe $m failed"
done
uname -r >"/host$WORK/out/kernel"
echo "vmtest-init: kernel $(uname -r), $(grep -c ^processor /proc/cpuinfo) CPUs; running the plan"

tab=$(printf '\t')
while IFS="$tab" read -r name pkg regex kind; do
	if [ "$kind" = exec ]; then
		# a command (MOOR_VMTEST_EXEC): its arguments are in the regex column, split on spaces
		echo "=== vmtest: running $name $regex"
		# shellcheck disable=SC2086
		chroot /host /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
			HOME=/root TMPDIR=/tmp MOOR_VMTEST=1 MOOR_TEST_BIN_DIR="$WORK/bin/moor" \
			/bin/sh -c 'cd "$1" && shift && exec "$@"' sh "$REPO" "$WORK/bin/$name" $regex 2>&1 | tee "/host$WORK/out/$name.log"
		echo $? >"/host$WORK/out/$name.rc"
		continue
	fi
	echo "=== vmtest: $pkg -run '$regex'"
	chroot /host /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		HOME=/root TMPDIR=/tmp MOOR_VMTEST=1 MOOR_TEST_BIN_DIR="$WORK/bin/moor" \
		/bin/sh -c 'cd "$1" && exec "$2" -test.v -test.count=1 -test.timeout=10m -test.run "$3"' \
		sh "$REPO/$pkg" "$WORK/bin/$name.test" "$regex" 2>&1 | tee "/host$WORK/out/$name.log"
	echo $? >"/host$WORK/out/$name.rc"
done <"/host$WORK/plan"
sync
poweroff -f
