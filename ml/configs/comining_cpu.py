"""Co-Mining on the CPU: two cpu_small peers trained together, each handing the faces it trusts
to the other. r ramps from 0 to r_max = 0.2 (about the injected noise rate) over 2 epochs; faces
both networks trust weigh 2.

    .venv/bin/python -m ml train --config ml/configs/comining_cpu.py --data-list var/noisy/train.lst \\
        --data-root ../shared/data/lfw/images_deepfunneled --run-dir var/runs/comining
"""
config = dict(
    backbone="cpu_small",
    head="arcface",
    head_kwargs={"s": 32.0},
    data={"transform": {"crop": 150, "size": 64, "flip": True}},
    method="comining",
    comining={"r_max": 0.2, "ramp": 2.0, "ramp_by": "epoch", "clean_weight": 2.0},
    optimizer="sgd",
    lr=0.1,
    momentum=0.9,
    weight_decay=5e-4,
    warmup_epochs=1,
    schedule="poly",
    epochs=20,
    batch_size=64,
    grad_clip=5.0,
    checkpoint_every=200,
    log_every=10,
    seed=0,
    num_workers=2,
)
