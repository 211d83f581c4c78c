#!/usr/bin/env bash
# An old checkout's code vs this one: training writes the same model-file bytes, each resumes the
# other's checkpoint to the same bytes, each loads the other's model.pt. OLD_SRC: the src/ folder
# of a checkout from before the layered package (issue #23), e.g. after
# `git worktree add /tmp/old dd7b2c0`: bash scripts/compat_check.sh /tmp/old/src
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OLD=$(cd "${1:?usage: scripts/compat_check.sh OLD_SRC}" && pwd); NEW=$ROOT/src
PY=${PYTHON:-$ROOT/.venv/bin/python}
X=$(mktemp -d); trap 'rm -rf "$X"' EXIT; mkdir -p $X/A
export X
FAIL=0
cd "$ROOT/tests" && PYTHONPATH=$NEW $PY - <<'PY'
import os, yaml, conftest
raw = conftest.tiny_params(**{"experiments.tiny.epochs": 2, "train.checkpoint_every_steps": 4})
raw["experiments"]["tinyc"] = dict(raw["experiments"]["tiny"], variant="cgan")
yaml.safe_dump(raw, open(os.environ["X"] + "/A/params.yaml", "w"), sort_keys=False)
PY
run() { (cd "$2" && PYTHONPATH=$1 MLFLOW_DISABLE_TELEMETRY=true $PY -m dcganlab "${@:3}" -p params.yaml); }
run $OLD $X/A fetch >/dev/null; run $OLD $X/A prepare >/dev/null
cp -r $X/A $X/B
run $OLD $X/A train tiny; run $OLD $X/A train tinyc
run $NEW $X/B train tiny; run $NEW $X/B train tinyc
echo "== 2 epochs: old (A) vs new (B)"
for f in models/tiny/model.pt models/tinyc/model.pt models/tiny/train/generators/epoch_0001.pt models/tinyc/train/generators/epoch_0002.pt models/tiny/train/grids/epoch_0002.png ; do  # (losses.csv differs: it holds timings)
  a=$(sha256sum < $X/A/$f | cut -c1-16); b=$(sha256sum < $X/B/$f | cut -c1-16)
  echo "$f old $a new $b $([ $a = $b ] && echo SAME || echo DIFFERENT)"; [ $a = $b ] || FAIL=1
done
PYTHONPATH=$NEW $PY - <<'PY'
import os, torch
X = os.environ["X"]
for exp in ("tiny", "tinyc"):
    a = torch.load(f"{X}/A/models/{exp}/train/checkpoint.pt", weights_only=True)
    b = torch.load(f"{X}/B/models/{exp}/train/checkpoint.pt", weights_only=True)
    assert list(a) == list(b), (list(a), list(b))
    def same(x, y):
        if isinstance(x, dict): return list(x) == list(y) and all(same(x[k], y[k]) for k in x)
        if isinstance(x, (list, tuple)): return len(x) == len(y) and all(same(p, q) for p, q in zip(x, y))
        if torch.is_tensor(x): return torch.equal(x, y)
        return True  # floats in history: timings differ run to run
    print(exp, "checkpoint keys in the same order:", list(a), "; tensors and optimizer states equal:", same(a, b))
    assert same(a, b)
PY
echo "== cross-resume to 3 epochs: new code on old checkpoints (A), old code on new checkpoints (B)"
for d in A B; do sed -i 's/epochs: 2/epochs: 3/' $X/$d/params.yaml; done
run $NEW $X/A train tiny; run $NEW $X/A train tinyc
run $OLD $X/B train tiny; run $OLD $X/B train tinyc
for f in models/tiny/model.pt models/tinyc/model.pt models/tinyc/train/generators/epoch_0003.pt; do
  a=$(sha256sum < $X/A/$f | cut -c1-16); b=$(sha256sum < $X/B/$f | cut -c1-16)
  echo "$f old->new $a new->old $b $([ $a = $b ] && echo SAME || echo DIFFERENT)"; [ $a = $b ] || FAIL=1
done
echo "== load: new code reads old model files, old code reads new ones"
PYTHONPATH=$NEW $PY -c "
from pathlib import Path; from dcganlab.gan.modelfile import load_model
G, D, m = load_model(Path('$X/B/models/tinyc/model.pt')); print('new code loads old-written model.pt:', m['experiment'].variant, m['num_classes'], D is not None)"
PYTHONPATH=$OLD $PY -c "
from pathlib import Path; from dcganlab.train import load_model  # the old tree's
G, D, m = load_model(Path('$X/A/models/tinyc/model.pt')); print('old code loads new-written model.pt:', m['experiment'].variant, m['num_classes'], D is not None)"
exit $FAIL
