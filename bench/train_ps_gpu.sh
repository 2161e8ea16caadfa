#!/usr/bin/env bash
# The training experiment of issue 7 on one CUDA GPU: progressive shrinking on the whole Fashion-MNIST training
# split (ofa_core/configs/ps_fashion_mnist_gpu.yaml), from-scratch runs alongside it, the accuracy dataset and the
# accuracy predictor fitted on it (bench/train_ps_fashion_mnist.py). Uses the machine's own python3 and torch.
#
#   OFAKIT_FASHION_MNIST=DIR bench/train_ps_gpu.sh RUNDIR PACKDIR [BUDGET_S [ACC_TIME_S]]
#
# DIR holds train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz (Debian's dataset-fashion-mnist; carry them
# to a machine without it). BUDGET_S (default 1800) is the training budget the schedule is scaled to; ACC_TIME_S
# caps the accuracy dataset (default: none). PACKDIR (e.g. the device tool's $OUT, at most 8 files) gets the log,
# results.json, report.md, accuracy.jsonl, the scaled config, the training logs and the final supernet in fp16.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
if [ $# -lt 2 ]; then
    echo "usage: OFAKIT_FASHION_MNIST=DIR bench/train_ps_gpu.sh RUNDIR PACKDIR [BUDGET_S [ACC_TIME_S]]" >&2
    exit 2
fi
RUN=$1 PACK=$2 BUDGET=${3:-1800} ACC_TIME=${4:-}
CONFIG=${CONFIG:-ofa_core/configs/ps_fashion_mnist_gpu.yaml}  # another schedule, e.g. a tiny one for a dry run
PY=${PYTHON:-python3}
. bench/_checkout_path.sh
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
mkdir -p "$RUN" "$PACK" || exit 2
"$PY" bench/train_ps_fashion_mnist.py --out "$RUN" --config "$CONFIG" \
    --budget-s "$BUDGET" --contention 1.4 --scratch 3 --scratch-parallel --scratch-wait-s 120 --n-acc 2000 \
    --acc-eval 10000 --acc-calib 2000 --acc-procs 6 ${ACC_TIME:+--acc-time-s "$ACC_TIME"} --threads 2 \
    --no-append 2>&1 | tee "$PACK/train_ps.log"
code=${PIPESTATUS[0]}
cat "$RUN"/scratch/*.log "$RUN/accuracy-dataset.log" >"$PACK/sublogs.txt" 2>/dev/null
for f in results.json report.md accuracy.jsonl config-scaled.yaml; do
    [ -f "$RUN/$f" ] && cp "$RUN/$f" "$PACK/"
done
cat "$RUN"/probe/log.jsonl "$RUN"/supernet/log.jsonl "$RUN"/scratch/log.jsonl >"$PACK/train_log.jsonl" 2>/dev/null
"$PY" - "$RUN" "$PACK" <<'PYEOF'
import glob, os, sys
import torch
finals = sorted(glob.glob(os.path.join(sys.argv[1], "supernet", "*", "final.pt")), key=os.path.getmtime)
if finals:
    sd = torch.load(finals[-1], map_location="cpu", weights_only=True)["model"]
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in sd.items()},
               os.path.join(sys.argv[2], "supernet_fp16.pt"))
    print(f"train_ps_gpu: packed {finals[-1]} (fp16)")
PYEOF
exit "$code"
