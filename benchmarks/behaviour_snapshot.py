"""A behaviour snapshot of the library, to compare two source trees (e.g. before and after a refactor).

For every model of the test zoo (tests/compresskit/zoo.py) and FeatherFace's Nano-B and V1: the
``find_groups`` output (name, channels, cell sizes, modules of each set), ``ParamPredictor`` at rates
0.1 / 0.3 / 0.5, the parameter count and a SHA-256 of the state dict after ``prune(..., 0.3)``, and a
SHA-256 of the exported ONNX bytes. Prints one JSON object; two trees behave the same when the objects
are equal. Works with the pre-0.2 layout (``reference.featherface``, callable ``compresskit.prune``) too.

    git worktree add /tmp/old d474a1e
    PYTHONPATH=/tmp/old .venv/bin/python benchmarks/behaviour_snapshot.py /tmp/old > before.json
    .venv/bin/python benchmarks/behaviour_snapshot.py . > after.json
    cmp before.json after.json
"""
import hashlib
import json
import sys
import tempfile
import warnings
from pathlib import Path
warnings.simplefilter("ignore")
tree = Path(sys.argv[1]).resolve()
sys.path.insert(0, str(tree))
sys.path.insert(0, str(tree / "tests/compresskit"))
import torch
torch.set_num_threads(1)
import compresskit as ck
try:
    from featherface import models as ff_models
except ImportError:
    from reference.featherface import models as ff_models
from zoo import ZOO, ZOO_PROTECT

def sd_hash(model):
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode()); h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]

def onnx_hash(model, inputs):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "m.onnx"
        ck.export_onnx(model, inputs, p)
        return hashlib.sha256(p.read_bytes()).hexdigest()[:16]

def describe(groups):
    return [[g.name, g.num_channels, [len(c) for c in g.cells], sorted({i.module for i in g.items})] for g in groups]

out = {}
entries = [(n, *ZOO[n](), ZOO_PROTECT.get(n, ())) for n in sorted(ZOO)]
def ff(name):
    torch.manual_seed(0)
    m = ff_models.build_model(name).eval()
    return m, torch.randn(1, 3, 64, 64)
for name in ("nano_b", "featherface_v1"):
    m, x = ff(name)
    entries.append((name, m, x, ff_models.NANO_B_PROTECT_PATTERNS if name == "nano_b" else ff_models.FEATHERFACE_V1_PROTECT_PATTERNS))
for name, model, x, protect in entries:
    inputs = x if isinstance(x, tuple) else (x,)
    rec = {}
    try:
        groups = ck.find_groups(model, inputs, protect=list(protect))
        rec["groups"] = describe(groups)
        pred = ck.ParamPredictor(model, groups)
        rec["predict"] = [pred(r) for r in (0.1, 0.3, 0.5)]
        prune_fn = ck.prune if isinstance(ck.prune, type(len)) or hasattr(ck.prune, "__code__") else ck.prune.prune
        prune_fn(model, inputs, 0.3, groups=groups)
        rec["params"] = ck.count_params(model)
        rec["state"] = sd_hash(model)
        try:
            rec["onnx"] = onnx_hash(model.eval(), inputs)
        except Exception as e:
            rec["onnx"] = f"error {type(e).__name__}"
    except Exception as e:
        rec["error"] = f"{type(e).__name__}: {e}"[:200]
    out[name] = rec
    print(name, rec.get("params"), rec.get("onnx"), rec.get("error", ""), file=sys.stderr)
print(json.dumps(out, sort_keys=True))
