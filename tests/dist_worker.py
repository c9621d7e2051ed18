"""Run under torchrun by tests/test_distributed.py: ``train()`` with the debug preset.

``python dist_worker.py DATA OUT MAX_STEPS KEY=VALUE ...`` (MAX_STEPS 0 = run to ``train.steps``).
Prints how many ``nn.Module`` objects are still alive after ``shutdown()``."""

import gc
import sys

import torch

from predrecon.config import apply_overrides
from predrecon.presets import get_preset
from predrecon.train.distributed import shutdown
from predrecon.train.loop import train

data, out, max_steps, *ov = sys.argv[1:]
cfg = apply_overrides(get_preset("debug"), [f"data.path={data}", "train.progress=false", "train.device=cpu", *ov])
try:
    train(cfg, out, resume="auto", max_steps=int(max_steps) or None)
except BaseException:
    shutdown(clean=False)
    raise
shutdown()
# what shutdown() left for the interpreter's exit to free (counted without collecting): must be none
print(f"modules alive after shutdown: {sum(isinstance(o, torch.nn.Module) for o in gc.get_objects())}", flush=True)
