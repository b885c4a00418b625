#!/bin/sh
# PID 1 of the service layer's private machine: run by `cargo xtask test --layer service`
# (xtask/src/service.rs) as
#     setsid unshare --pid --fork --mount --mount-proc xtask/service/boot.sh SCRATCH CGROUP
# inside the node's network namespace. It gives systemd a private root, then execs it.
#
# The host stays clean: /usr, /etc and /var are overlays whose upper layers live on a tmpfs
# at SCRATCH, so `apt install`, dpkg's database, the `traffic` group, enablement links and
# the journal exist only in this mount namespace and vanish with it. /run and /sys/fs/bpf
# (pins) are private too, and systemd's cgroups live under CGROUP in every hierarchy.
set -eu
scratch=$1
cgroup=$2

mount --make-rprivate /
# NOT optional: systemd-tmpfiles empties /tmp and /var/tmp at boot; without these private
# mounts it would empty the machine's real ones (other programs' files).
mount -t tmpfs tmpfs /tmp
mount -t tmpfs -o mode=0700 tmpfs "$scratch"
for d in usr etc var; do
    mkdir -p "$scratch/$d/upper" "$scratch/$d/work"
    mount -t overlay overlay \
        -o "lowerdir=/$d,upperdir=$scratch/$d/upper,workdir=$scratch/$d/work" "/$d"
done
# After the /var overlay, which would hide it.
mount -t tmpfs tmpfs /var/tmp
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=0700 tmpfs /root
mount -t bpf bpf /sys/fs/bpf

# systemd's cgroup tree under a cgroup of our own in every hierarchy, removed afterwards.
# (A hierarchy that refuses the move, like a v1 cpuset with no CPUs assigned yet, is left.)
for h in /sys/fs/cgroup/*/; do
    [ -w "${h}cgroup.procs" ] || continue
    mkdir -p "$h$cgroup"
    if ! echo 0 2>/dev/null >"$h$cgroup/cgroup.procs"; then
        rmdir "$h$cgroup"
    fi
done

# Container images ship a policy-rc.d that forbids maintainer scripts to start or stop
# services (exit 101); a real machine has none. Only this private /usr loses it.
rm -f /usr/sbin/policy-rc.d

# basic.target: the journal and what the tests start, not every enabled unit of the host.
# Its own messages (a watchdog timeout, a restart) go to its journal, as on a real machine.
exec env container=other /lib/systemd/systemd --system --log-target=journal-or-kmsg \
    --unit=basic.target
