"""Training and inference throughput, printed as one JSON object.

    .venv/bin/python bench/train.py [--steps 20] [--models cpu_small,iresnet50] [--batch 128]

For each backbone: training samples/s (forward + ArcFace head + backward + SGD step, on
tensors already in memory, so the model alone is measured) and inference images/s; fp32 on
the CPU, bf16 autocast with channels-last on a GPU. Separately, the data pipeline: LFW JPEGs
decoded, cropped and resized per second with the DataLoader workers the machine has, so the
two can be compared ("pipeline_images_per_s" must exceed the training rate). The same command
runs unchanged on CPU and GPU hosts.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ml.data.dataset import FaceDataset, FaceSample, collate_faces  # noqa: E402
from ml.data.transforms import build_transform  # noqa: E402
from ml.heads.factory import build_head  # noqa: E402
from ml.models.factory import build_backbone  # noqa: E402

LFW = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "lfw" / "images_deepfunneled"
CLASSES = 1000


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _autocast(device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def bench_model(name: str, batch: int, steps: int, device: torch.device) -> dict:
    backbone = build_backbone(name).to(device)
    head = build_head("arcface", backbone.embedding_dim, CLASSES).to(device)
    if device.type == "cuda":
        backbone = backbone.to(memory_format=torch.channels_last)
    size = backbone.input_size
    images = torch.randn(batch, 3, size, size, device=device)
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, CLASSES, (batch,), device=device)
    params = list(backbone.parameters()) + list(head.parameters())
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)

    def train_step():
        with _autocast(device):
            logits = head(backbone(images), labels)
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    backbone.train()
    for _ in range(max(2, steps // 5)):  # warm-up: allocator, cuDNN autotune
        train_step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        train_step()
    _sync(device)
    train_rate = batch * steps / (time.perf_counter() - start)

    backbone.eval()
    with torch.inference_mode(), _autocast(device):
        for _ in range(2):
            backbone(images)
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            backbone(images)
        _sync(device)
    infer_rate = batch * steps / (time.perf_counter() - start)
    return {
        "input_size": size,
        "batch": batch,
        "precision": "bf16" if device.type == "cuda" else "fp32",
        "train_samples_per_s": round(train_rate, 1),
        "inference_images_per_s": round(infer_rate, 1),
    }


def bench_pipeline(size: int, batch: int, batches: int) -> dict | None:
    if not LFW.exists():
        return None
    files = sorted(LFW.glob("*/*.jpg"))[: batch * batches]
    dataset = FaceDataset(
        [FaceSample(str(f), 0) for f in files],
        transform=build_transform({"crop": 150, "size": size, "flip": True}, train=True),
    )
    workers = min(8, os.cpu_count() or 1)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, num_workers=workers, collate_fn=collate_faces)
    start = time.perf_counter()
    count = sum(len(b.labels) for b in loader)
    return {"workers": workers, "size": size, "images_per_s": round(count / (time.perf_counter() - start), 1)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cpu_small,iresnet50")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=None, help="default: 128 on GPU, 32 on CPU")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch = args.batch or (128 if device.type == "cuda" else 32)
    torch.backends.cudnn.benchmark = True
    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu x{torch.get_num_threads()}",
        "torch": torch.__version__,
    }
    for name in args.models.split(","):
        result[name] = bench_model(name, batch, args.steps, device)
    result["pipeline"] = bench_pipeline(112, batch, 8 if device.type == "cpu" else 40)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
