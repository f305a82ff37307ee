#!/bin/bash
# Guest side of tests/vm/run_in_vm.py: runs as root (PID 1's child) inside the
# virtme-ng guest. Usage: guest_setup.sh OUT
#
# OUT is the results directory shared read-write with the host (--rwdir). The
# host leaves there:
#   OUT/vm/argv   the command, NUL-separated
#   OUT/vm/env    extra environment, NUL-separated NAME=VALUE
#   OUT/vm/conf   NUL-separated: repo dir, venv dir
# The guest writes:
#   OUT/vm/booted      `uname -r` (proof that the kernel booted and we ran)
#   OUT/vm/setup.log   what the setup did (controllers, cgroups, disk)
#   OUT/vm/setup_failed  present if the setup could not be completed
#   OUT/vm/stdout, OUT/vm/stderr, OUT/vm/exit_code   of the command
set -u

OUT=${1:?usage: guest_setup.sh OUT}
VM="$OUT/vm"
LOG="$VM/setup.log"
uname -r > "$VM/booted"
: > "$LOG"

log() { printf '%s\n' "$*" >> "$LOG"; }
fail() {
    log "FAILED: $*"
    printf '%s\n' "$*" > "$VM/setup_failed"
    exit 1
}

mapfile -d '' CONF < "$VM/conf"
REPO=${CONF[0]}
VENV=${CONF[1]}

# --- cgroup2 at /sys/fs/cgroup ---------------------------------------------
CG=/sys/fs/cgroup
if [ "$(stat -f -c %T "$CG" 2>/dev/null)" != cgroup2fs ]; then
    mkdir -p "$CG" 2>/dev/null
    mount -t cgroup2 -o nsdelegate cgroup2 "$CG" || fail "cannot mount cgroup2 at $CG"
fi
log "cgroup2 mounted at $CG"

# Enable every available controller on $1's cgroup.subtree_control, one at a
# time so a controller the kernel refuses does not block the others.
enable_all() {
    local dir=$1 c
    for c in $(cat "$dir/cgroup.controllers"); do
        echo "+$c" > "$dir/cgroup.subtree_control" 2>> "$LOG" \
            || log "could not enable $c in $dir"
    done
    log "$dir subtree_control: $(cat "$dir/cgroup.subtree_control")"
}

# Layout (see tests/vm/README.md):
#   /sys/fs/cgroup                   root: every controller delegated; this
#                                    setup shell stays here
#   /sys/fs/cgroup/cgstats-vm        no processes, every controller delegated
#   /sys/fs/cgroup/cgstats-vm/runner = $CGSTATS_VM_CGROUP: the command and
#                                    nothing else, subtree_control left empty.
# v2's no-internal-process rule: a non-root cgroup that holds processes cannot
# enable controllers for its children. A test that wants controllers beneath
# its own cgroup first moves the processes of its own cgroup into a leaf child
# (e.g. runner/self), then writes runner/cgroup.subtree_control.
BASE="$CG/cgstats-vm"
RUNNER="$BASE/runner"
enable_all "$CG"
mkdir -p "$RUNNER" || fail "cannot create $RUNNER"
enable_all "$BASE"
log "$RUNNER controllers: $(cat "$RUNNER/cgroup.controllers")"

# --- the virtio disk ---------------------------------------------------------
DISK_DIR=""
DISK_DEV=""
if [ -b /dev/vda ]; then
    DISK_DIR=/run/cgstats-vm/disk
    mkdir -p "$DISK_DIR"
    if mount -t ext4 /dev/vda "$DISK_DIR" 2>> "$LOG"; then
        DISK_DEV=$(cat /sys/block/vda/dev)
        log "/dev/vda ($DISK_DEV) mounted at $DISK_DIR"
    else
        fail "cannot mount /dev/vda"
    fi
else
    log "no /dev/vda"
fi

# /dev/vdb: a raw scratch disk (no filesystem) that tests may discard blocks on.
SCRATCH_DEV=""
if [ -b /dev/vdb ]; then
    SCRATCH_DEV=/dev/vdb
    log "/dev/vdb ($(cat /sys/block/vdb/dev)) is the scratch disk;" \
        "discard_max_bytes $(cat /sys/block/vdb/queue/discard_max_bytes)"
fi

# --- a cached view of the host's files -----------------------------------------
# vng shares the host's / over 9p without caching: every stat and every page
# of a mapped library is a round trip, and a Python start costs 2-7 s under
# emulation. The host exports / a second time (tag cgstats_ro, run_in_vm.py);
# mounted with cache=loose it is bound over the repo, the venv and the venv's
# Python, which nobody changes while the guest runs. Best effort: without it
# everything works, only slower.
HOSTRO=/run/cgstats-vm/host
bind_cached() {
    local dir=$1
    [ -d "$dir" ] && [ -d "$HOSTRO$dir" ] || return 0
    if mount --bind "$HOSTRO$dir" "$dir" 2>> "$OUT_KEPT/vm/setup.log"; then
        rebind_out
        log "cached view bound over $dir"
    else
        log "could not bind the cached view over $dir"
    fi
}
# OUT (vng's --rwdir) may lie inside the repo or the venv (run_live.py's
# default is REPO/build/vm-results): keep a handle on it, to put it back on
# top of the read-only view bound over them.
OUT_KEPT=/run/cgstats-vm/out
mkdir -p "$HOSTRO" "$OUT_KEPT"
mount --bind "$OUT" "$OUT_KEPT" || fail "cannot bind $OUT"
rebind_out() {
    mountpoint -q "$OUT" && [ -w "$VM" ] && return 0
    mount --bind "$OUT_KEPT" "$OUT" || fail "cannot rebind $OUT"
    log "$OUT bound again over the cached view"
}
if mount -t 9p -o trans=virtio,version=9p2000.L,cache=loose,ro,msize=512000 \
        cgstats_ro "$HOSTRO" 2>> "$LOG"; then
    PY_HOME=$(sed -n 's/^home *= *//p' "$VENV/pyvenv.cfg" 2>/dev/null)
    PY_PREFIX=$(dirname "${PY_HOME:-/usr/bin}")
    case "$PY_PREFIX" in
        /|/usr) for d in "$PY_PREFIX"/lib/python3*; do bind_cached "$d"; done ;;
        *) bind_cached "$PY_PREFIX" ;;
    esac
    bind_cached "$VENV"
    bind_cached "$REPO"
else
    log "no cached view of the host (tag cgstats_ro): the host's files are read uncached"
fi

# --- environment -------------------------------------------------------------
# Start from a clean, known environment; the host adds to it through OUT/vm/env.
unset PYTHONHOME PYTHONPATH
export HOME=/root
export PATH="$VENV/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
export VIRTUAL_ENV="$VENV"
export PYTHONDONTWRITEBYTECODE=1   # the shared host root is read-only
export CGSTATS_VM=1
export CGSTATS_VM_OUT="$OUT"
export CGSTATS_VM_CGROUP="$RUNNER"
export CGSTATS_VM_DISK="$DISK_DIR"
export CGSTATS_VM_DISK_DEV="$DISK_DEV"
export CGSTATS_VM_SCRATCH_DEV="$SCRATCH_DEV"
while IFS= read -r -d '' kv; do
    export "${kv?}"
done < "$VM/env"
log "python: $(command -v python)"

cd "$REPO" || fail "cannot cd to $REPO"
mapfile -d '' ARGV < "$VM/argv"
[ "${#ARGV[@]}" -gt 0 ] || fail "empty command"

# --- the command -------------------------------------------------------------
log "running: ${ARGV[*]}"
# A subshell joins the runner cgroup alone, then becomes the command.
(
    echo "$BASHPID" > "$RUNNER/cgroup.procs" || {
        echo "cannot join $RUNNER" > "$VM/setup_failed"; exit 125; }
    exec "${ARGV[@]}"
) > "$VM/stdout" 2> "$VM/stderr" < /dev/null
rc=$?
echo "$rc" > "$VM/exit_code.tmp" && mv "$VM/exit_code.tmp" "$VM/exit_code"
log "exit code $rc"
sync
exit 0
