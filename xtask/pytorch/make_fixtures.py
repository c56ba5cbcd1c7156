"""Writes the fixtures of the PyTorch checkpoint parity tests: for each model, a checkpoint in
RepDistiller's layout and the logits PyTorch computes from it on one shared input.

    python3 xtask/pytorch/make_fixtures.py --out DIR [--models NAME,NAME|all] [--classes N]
                                           [--batch B] [--seed S]

For each model (default: the whole zoo, `kd_models.zoo_names()`), built for 3x32x32 inputs
after `torch.manual_seed(seed)`:
  * every BatchNorm gets random affine parameters (weight ~ U(0.5, 1.5), bias ~ 0.1 N(0, 1)),
    then a few train-mode forward passes without gradients on random inputs (standard normal)
    set its running statistics to theirs, away from 0 / 1 (and make `num_batches_tracked`
    non-zero), so that a loader that drops or swaps any BatchNorm tensor gives different logits;
  * in eval mode, the logits of the shared input are computed;
  * DIR/<name>.pth holds `{"model": state_dict, "epoch": 240}` (torch.save's zip format, as
    RepDistiller's `ckpt_epoch_240.pth`), DIR/<name>.logits.npy the logits (float32,
    [B, classes]).
DIR/input.npy is the shared input (float32, [B, 3, 32, 32], standard normal from a generator
seeded with `seed`), DIR/manifest.json lists the files.

The same arguments give the same tensors (the zip files' bytes may still differ).
"""

import argparse
import json
import os
import re
import sys
import time

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kd_models  # noqa: E402

INPUT_SHAPE = (3, 32, 32)
# Train-mode passes for the running statistics, and their batch size (more than one sample per
# channel even at the smallest activations).
STAT_PASSES = 3
STAT_BATCH = 4


def randomize_batch_norm(model, generator):
    """Random BatchNorm affine parameters, then running statistics from a few train passes."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for m in norms:
            m.weight.copy_(torch.rand(m.weight.shape, generator=generator) + 0.5)
            m.bias.copy_(torch.randn(m.bias.shape, generator=generator) * 0.1)
            # A cumulative average during these passes makes the running statistics those of
            # the data: with the default momentum they would stay 73% at 0 / 1, and the deep
            # residual networks' eval-mode activations (resnet110's logits) would reach the
            # thousands, too far from a trained network's to test tolerances meaningfully.
            m.momentum = None
        model.train()
        for _ in range(STAT_PASSES):
            model(torch.randn((STAT_BATCH,) + INPUT_SHAPE, generator=generator))
        for m in norms:
            m.momentum = 0.1
    model.eval()


def make(name, classes, seed, x, out):
    torch.manual_seed(seed)
    model = kd_models.build(name, INPUT_SHAPE, classes)
    randomize_batch_norm(model, torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        logits = model(x).numpy().astype(np.float32)
    torch.save({"model": model.state_dict(), "epoch": 240}, os.path.join(out, f"{name}.pth"))
    np.save(os.path.join(out, f"{name}.logits.npy"), logits)
    params = sum(p.numel() for p in model.parameters())
    return params, float(np.abs(logits).max())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--models", default="all", help="comma-separated model names, or `all` (the zoo)")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(2)
    if args.models == "all":
        names = kd_models.zoo_names()
    else:
        try:
            names = [kd_models.canonical_name(n) for n in args.models.split(",") if n.strip()]
        except ValueError as e:
            raise SystemExit(str(e))
    for name in names:
        # Canonical names are file-name safe; this guards the assumption.
        if not re.fullmatch(r"[a-z0-9-]+", name):
            raise SystemExit(f"model name `{name}` is not a safe file name")
    os.makedirs(args.out, exist_ok=True)

    x = torch.randn((args.batch,) + INPUT_SHAPE, generator=torch.Generator().manual_seed(args.seed))
    np.save(os.path.join(args.out, "input.npy"), x.numpy())

    entries = []
    start = time.perf_counter()
    for name in names:
        t = time.perf_counter()
        params, peak = make(name, args.classes, args.seed, x, args.out)
        size = os.path.getsize(os.path.join(args.out, f"{name}.pth"))
        print(f"{name:14s} {params:>10,d} params  max|logit| {peak:9.4f}  {size / 1e6:8.2f} MB  {time.perf_counter() - t:6.2f} s", flush=True)
        entries.append({"name": name, "weights": f"{name}.pth", "key": "model", "logits": f"{name}.logits.npy", "parameters": params})

    manifest = {
        "input": "input.npy",
        "input_shape": list(INPUT_SHAPE),
        "classes": args.classes,
        "models": entries,
        "torch": torch.__version__,
    }
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    print(f"{len(names)} model(s) in {time.perf_counter() - start:.1f} s -> {args.out}")


if __name__ == "__main__":
    main()
