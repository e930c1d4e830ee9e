#!/bin/bash
# CUDA smoke check of distil's paths on a GPU machine (run from the repository root). Each check runs on its own,
# logs to $OUT (or /tmp/cuda_check) and the summary says which passed. DEVICE=cpu runs the same checks here.
set -u
OUT=${OUT:-/tmp/cuda_check}; mkdir -p "$OUT"
DEV=${DEVICE:-cuda}
PY=${PY:-python3}
RUNS=$(mktemp -d)
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
pass=(); fail=()
check() {  # check NAME COMMAND...
  local name=$1; shift
  local t0=$SECONDS
  if "$@" > "$OUT/$name.log" 2>&1; then pass+=("$name ($((SECONDS - t0)) s)"); else fail+=("$name ($((SECONDS - t0)) s)"); tail -15 "$OUT/$name.log"; fi
}
D="$PY -m distil"
check version $D --version
check info $PY -c "import torch, distil; print(torch.__version__, torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-')"
check digits $D run distil/recipes/digits.yaml --runs-dir "$RUNS" --set device=$DEV --set teacher.epochs=3 --set train.epochs=3 --set name=digits
check digits_bf16_cache $D run distil/recipes/digits.yaml --runs-dir "$RUNS" --set device=$DEV --set teacher.epochs=2 --set train.epochs=2 --set train.precision=bf16 --set cache.dtype=fp32 --set name=digits-bf16
check multi_teacher $D run distil/recipes/multi_teacher.yaml --runs-dir "$RUNS" --set device=$DEV --set train.epochs=2 --set teacher.epochs=2 --set name=mt
check online $D run distil/recipes/online.yaml --runs-dir "$RUNS" --set device=$DEV --set train.epochs=2 --set name=online
check ship $D run distil/recipes/ship.yaml --runs-dir "$RUNS" --set device=$DEV --set teacher.epochs=2 --set train.epochs=2 --set compress.prune.recovery_epochs=1 --set name=ship
check eval_ship $D eval "$RUNS/ship/models/student.pt" --device $DEV
check seeds $D run distil/recipes/digits.yaml --runs-dir "$RUNS" --set device=$DEV --set teacher.epochs=2 --set train.epochs=2 --set name=seeds --seeds 2
check movielens $D run distil/recipes/movielens.yaml --runs-dir "$RUNS" --set device=$DEV --set data.limit=5000 --set train.epochs=2 --set name=ml
check lm $D run distil/recipes/lm.yaml --runs-dir "$RUNS" --set device=$DEV --set data.limit=300 --set teacher.epochs=1 --set train.epochs=1 --set name=lm
check torchrun $PY -m torch.distributed.run --nproc_per_node=1 -m distil run distil/recipes/digits.yaml --runs-dir "$RUNS" --set device=$DEV --set teacher.epochs=1 --set train.epochs=1 --set name=ddp
check api $PY - <<PYEOF
import torch, distil
from torch import nn
from sklearn.datasets import load_digits
from torch.utils.data import TensorDataset
d = load_digits(); x = torch.tensor(d.data, dtype=torch.float32) / 16; y = torch.tensor(d.target)
train, test = TensorDataset(x[:1400], y[:1400]), TensorDataset(x[1400:], y[1400:])
teacher = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
opt = torch.optim.SGD(teacher.parameters(), lr=0.1, momentum=0.9)
for _ in range(20):
    for i in range(0, 1400, 64):
        opt.zero_grad(); nn.functional.cross_entropy(teacher(x[i:i+64]), y[i:i+64]).backward(); opt.step()
student = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
r = distil.distill(teacher, student, train, test=test, epochs=5, device="$DEV")
print("api", r.metrics, next(r.student.parameters()).device)
PYEOF
echo "PASSED: ${pass[*]}"; echo "FAILED: ${fail[*]:-none}"
[ ${#fail[@]} -eq 0 ]
