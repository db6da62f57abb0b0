"""IResNet-50 + ArcFace on aligned 112x112 faces, arcface_torch style, for GPUs.

Per GPU: batch 128, bf16 autocast (fp16 with a loss scaler where bf16 is missing), channels-last.
SGD 0.1 with momentum 0.9 and weight decay 5e-4, polynomial (power 2) decay, gradient clipping at 5.
Launch on N GPUs with the same entry point:

    torchrun --nproc_per_node=N -m ml train --config ml/configs/iresnet50.py --data-rec /data/train.rec --run-dir RUN

For LFW-like unaligned images add `--set data.transform.crop=150`.
"""
config = dict(
    backbone="iresnet50",
    backbone_kwargs={"embedding_dim": 512},
    head="arcface",
    head_kwargs={"s": 64.0, "m2": 0.5},
    data={"transform": {"crop": None, "size": 112, "flip": True}},
    optimizer="sgd",
    lr=0.1,
    momentum=0.9,
    weight_decay=5e-4,
    warmup_epochs=0,
    schedule="poly",
    poly_power=2.0,
    epochs=20,
    batch_size=128,
    grad_clip=5.0,
    amp=True,
    amp_dtype="bf16",
    channels_last=True,
    checkpoint_every=2000,
    log_every=50,
    seed=0,
    num_workers=8,
    device="auto",
)
