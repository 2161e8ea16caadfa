#!/usr/bin/env bash
# Profile the OFA-MobileNetV3 space on this machine's CUDA GPU (graph/eager x batch 1/64), validate every profile
# on 100 held-out subnets, and write profiles + validation CSV/PNG + summary into OUTDIR (see bench/gpu_profile.py).
#
#   bench/gpu_profile.sh OUTDIR [PACKDIR] [options of bench/gpu_profile.py, e.g. --budget-s 400]
#
# PACKDIR (e.g. the device tool's $OUT, which returns at most 8 files) gets gpu_profiles.tar.gz, summary.json,
# the validation PNGs and gpu_profile.log, refreshed after every step, so a run cut short still returns results.
# Uses the machine's own python3 and torch: installs nothing (no network there), torch is never touched; the
# project runs from this checkout (bench/_checkout_path.sh). GPU_PROFILE_DRY_RUN=cpu tests the whole flow on a CPU.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
    echo "usage: bench/gpu_profile.sh OUTDIR [PACKDIR] [options]" >&2
    exit 2
fi
PY=${PYTHON:-python3}
command -v "$PY" >/dev/null 2>&1 || { echo "gpu_profile: $PY not found (set PYTHON=...)" >&2; exit 2; }
. bench/_checkout_path.sh
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

# Dependencies the profiling path imports (paramiko, skops and TFLite are not needed here).
"$PY" - <<'EOF' || exit 2
import importlib.util, sys
need = ["numpy", "scipy", "matplotlib", "typer", "click", "yaml", "torch"]
missing = [m for m in need if importlib.util.find_spec(m) is None]
if sys.version_info < (3, 10):
    missing.insert(0, "python>=3.10 (have %d.%d)" % sys.version_info[:2])
if missing:
    print("gpu_profile: missing: " + ", ".join(missing) + " (carry wheels, see /work/.library/device/README.md)",
          file=sys.stderr)
    sys.exit(2)
EOF

OUTDIR=$1
LOGDIR=$OUTDIR
if [ $# -ge 2 ] && [ "${2#-}" = "$2" ]; then LOGDIR=$2; fi
mkdir -p "$OUTDIR" "$LOGDIR" || exit 2
LOG="$LOGDIR/gpu_profile.log"
echo "gpu_profile: $(date -u +%FT%TZ) $("$PY" --version 2>&1) $*" >>"$LOG"
"$PY" bench/gpu_profile.py "$@" 2>&1 | tee -a "$LOG"
exit "${PIPESTATUS[0]}"
