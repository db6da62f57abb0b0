"""A model that trains in minutes on a laptop CPU: cpu_small (IResNet-18 layout at quarter width,
128-d embedding) on 64x64 crops, ArcFace with s = 32 (small sets converge badly at s = 64).

The crop of 150 suits LFW's funnelled 250x250 images; smaller images (e.g. ml.sample's 112x112
faces) are kept whole, since a crop larger than the image is clamped to it.

    .venv/bin/python -m ml train --config ml/configs/cpu_small.py --data-folder DIR --run-dir var/runs/x
"""
config = dict(
    backbone="cpu_small",
    backbone_kwargs={},
    head="arcface",
    head_kwargs={"s": 32.0},
    data={"transform": {"crop": 150, "size": 64, "flip": True}},
    optimizer="sgd",
    lr=0.1,
    momentum=0.9,
    weight_decay=5e-4,
    warmup_epochs=1,
    schedule="poly",
    epochs=20,
    batch_size=64,
    grad_clip=5.0,
    amp=False,
    checkpoint_every=200,
    log_every=10,
    seed=0,
    num_workers=2,
    device="auto",
)
