"""Run under torchrun by tests/test_distributed.py: ``train()`` with the debug preset.

``python dist_worker.py DATA OUT MAX_STEPS KEY=VALUE ...`` (MAX_STEPS 0 = run to ``train.steps``;
``{rank}`` in OUT is replaced by the rank).
Prints how many ``nn.Module`` objects are still alive after ``shutdown()``."""

import gc
import os
import sys

import torch

from predrecon.config import apply_overrides
from predrecon.presets import get_preset
from predrecon.train.distributed import shutdown
from predrecon.train.loop import train

data, out, max_steps, *ov = sys.argv[1:]
out = out.replace("{rank}", os.environ.get("RANK", "0"))  # a folder per rank: as nodes without a shared disk
cfg = apply_overrides(get_preset("debug"), [f"data.path={data}", "train.progress=false", "train.device=cpu", *ov])
try:
    train(cfg, out, resume="auto", max_steps=int(max_steps) or None)
except BaseException:
    shutdown(clean=False)
    raise
shutdown()
# what shutdown() left for the interpreter's exit to free (counted without collecting): must be none
print(f"modules alive after shutdown: {sum(isinstance(o, torch.nn.Module) for o in gc.get_objects())}", flush=True)
