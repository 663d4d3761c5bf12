#!/bin/bash
# Stage 2 of the SoftRoCE test guest: PID 1 after switch_root, running the
# host's own bash from the host's tree. Creates rxe<i> on eth<i>, runs
# /run/vmctl/cmd.sh with stdout/stderr on the two virtio-serial ports (the
# host side turns them back into vm-run's stdout/stderr), records the exit
# code in /run/vmctl/rc and powers off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 TERM=dumb
up() { local u; read -r u _ < /proc/uptime; echo "$u"; }
dbg() { [ -n "${VMDEBUG:-}" ] && echo "stage2: t=$(up)s $*" >/dev/console; }

OUT=/dev/console ERR=/dev/console
for p in /sys/class/virtio-ports/*; do
  [ -e "$p/name" ] || continue
  case "$(<"$p/name")" in
    stdout) OUT=/dev/${p##*/} ;;
    stderr) ERR=/dev/${p##*/} ;;
  esac
done

# SoftRoCE: rxe<i> on eth<i>. Done here rather than in the initramfs because
# busybox has no `rdma` tool; this is the host's iproute2.
for d in /sys/class/net/eth*; do
  [ -e "$d/device" ] || continue
  n=${d##*/}
  rdma link add "rxe${n#eth}" type rxe netdev "$n" || echo "stage2: rdma link add rxe${n#eth} ($n) failed" >"$ERR"
done
# Tests expect ports ACTIVE with their IPv4-mapped GID at index 1 right away;
# both normally hold at once, so this loop only guards against a slow start.
for d in /sys/class/infiniband/rxe*; do
  [ -e "$d" ] || continue
  for ((t = 0; t < 100; t++)); do
    read -r st < "$d/ports/1/state"; read -r g1 < "$d/ports/1/gids/1"
    [[ $st == *ACTIVE* && $g1 != 0000:0000:0000:0000:0000:0000:0000:0000 ]] && break
    sleep 0.1
  done
  [[ $st == *ACTIVE* ]] || echo "stage2: ${d##*/} port 1 is '$st' after 10 s" >"$ERR"
done
dbg "rxe done: $(ls /sys/class/infiniband 2>/dev/null | tr '\n' ' ')"

[ -f /run/vmctl/env ] && . /run/vmctl/env
cd "${VMCWD:-/}" 2>/dev/null || cd /
dbg "running command"
bash /run/vmctl/cmd.sh >"$OUT" 2>"$ERR" </dev/null
rc=$?
dbg "command exited rc=$rc"
up > /run/vmctl/uptime
echo "$rc" > /run/vmctl/rc
sync
busybox poweroff -f
echo o > /proc/sysrq-trigger
sleep 10
