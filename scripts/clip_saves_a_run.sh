#!/usr/bin/env bash
# The README's "watch clipping save a run": the same LSTM, plain SGD at lr 32, without
# and with global norm clipping at 1.0; prints each run's status from summary.json.
# Usage: scripts/clip_saves_a_run.sh [extra overrides, e.g. trainer.max_steps=300]
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
out=runs/clip_saves_a_run
for clip in "clip=none" "clip=norm clip.max_norm=1.0"; do
  name=${clip%% *}
  # shellcheck disable=SC2086
  "$py" -m seqbench train optim=sgd optim.lr=32 $clip "$@" "hydra.run.dir=$out/${name#clip=}"
done
"$py" - "$out" <<'PY'
import json, sys, pathlib
for d in sorted(pathlib.Path(sys.argv[1]).iterdir()):
    s = json.loads((d / "summary.json").read_text())
    print(f"{d.name:6s} status={s['status']:9s} divergence={s['divergence']} "
          f"final_val_bpc={s['final_val_bpc']} clip_fraction={s['clip_fraction']}")
PY
