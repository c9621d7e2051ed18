"""Run the side-by-side benchmarks and write benchmarks/results/*.json.

On a CPU machine this runs the small shape; on a GPU the BERT-base shape of DESIGN.md.
"""

import sys
from pathlib import Path

import torch

from predrecon.bench import main as bench_main

out = Path(__file__).parent / "results"
out.mkdir(exist_ok=True)
if torch.cuda.is_available():
    args = ["--shape", "base", "--batch", "256", "--seq", "128", "--json", str(out / "step_gpu_base.json")]
else:
    args = ["--shape", "tiny", "--batch", "32", "--seq", "128", "--steps", "5",
            "--json", str(out / "step_cpu_tiny.json")]
sys.exit(bench_main(args + sys.argv[1:]))
