"""Co-Mining on the CPU: two cpu_small peers trained together, each handing the faces it trusts
to the other. r ramps from 0 to r_max = 0.2 (about the injected noise rate) over 2 epochs; faces
both networks trust weigh 2.

    .venv/bin/python -m ml train --config ml/configs/comining_cpu.py --data-list var/noisy/train.lst \\
        --data-root ../shared/data/lfw/images_deepfunneled --run-dir var/runs/comining
"""
from ml.configs.cpu_small import config as cpu_small

# The cpu_small recipe, with the two-network method on top.
config = dict(
    cpu_small,
    method="comining",
    comining={"r_max": 0.2, "ramp": 2.0, "ramp_by": "epoch", "clean_weight": 2.0},
)
