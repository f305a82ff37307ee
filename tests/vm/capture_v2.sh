#!/bin/bash
# Refresh tests/fixtures/v2-unified from a real cgroup v2 kernel, in one boot:
#
#   bash tests/vm/capture_v2.sh
#
# Boots the newest /boot/vmlinuz-* under qemu (tests/vm/run_in_vm.py), runs
# tests/fixtures/capture.py inside with its IO on the virtio disk (/dev/vda,
# 254:0) from the root cgroup (capture.py enables controllers in its own
# cgroup, which v2 allows only in the root while it holds processes), and replaces tests/fixtures/v2-unified with the result only if the
# capture succeeded and wrote capture.json. Exit status as run_in_vm.py's
# (77 = skipped because qemu/vng/kernel are missing).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PY=${PYTHON:-$(command -v python || command -v python3)}
DEST="$REPO/tests/fixtures/v2-unified"
OUT=$(mktemp -d /tmp/cgstats-capture-v2.XXXXXX)
trap 'rm -rf "$OUT"' EXIT

rc=0
"$PY" "$REPO/tests/vm/run_in_vm.py" --out "$OUT" --stream --timeout "${TIMEOUT:-900}" -- \
    sh -c 'echo $$ > /sys/fs/cgroup/cgroup.procs && mkdir -p "$CGSTATS_VM_DISK/io" &&
           exec python tests/fixtures/capture.py --out "$CGSTATS_VM_OUT/v2-unified" \
                --io-dir "$CGSTATS_VM_DISK/io"' || rc=$?
if [ "$rc" -ne 0 ]; then
    echo "capture_v2: failed (exit $rc); $DEST left as it was" >&2
    trap - EXIT
    echo "capture_v2: guest results kept in $OUT" >&2
    exit "$rc"
fi
if [ ! -f "$OUT/v2-unified/capture.json" ]; then
    echo "capture_v2: no capture.json in $OUT/v2-unified; $DEST left as it was" >&2
    trap - EXIT
    exit 1
fi
rm -rf "$DEST"
cp -a "$OUT/v2-unified" "$DEST"
echo "capture_v2: $DEST refreshed ($(find "$DEST" -type f | wc -l) files)"
