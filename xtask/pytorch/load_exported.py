"""Loads a network exported by the project (a safetensors file in PyTorch's layout) into its
PyTorch definition from `kd_models`, and prints its eval-mode logits on an input.

    python3 xtask/pytorch/load_exported.py --model resnet8 --classes 100 \\
        --weights resnet8.safetensors [--input-shape 3x32x32] [--input X.npy] \\
        [--expect LOGITS.npy] [--rtol 1e-4] [--save-pth FILE.pth]

`--input` is a float32 .npy array in NCHW layout; its shape sets the input shape (it must
agree with `--input-shape` when both are given). Without it, a fixed standard-normal batch of
two of `--input-shape` is used. `--expect` compares the logits with reference ones (for
instance those the Rust side computed) and exits with status 1 when the relative difference
max |logits - expected| / max |expected| exceeds `--rtol`. `--save-pth` then writes the loaded
model with `torch.save` in RepDistiller's layout (`{"model": state_dict}`), a PyTorch teacher
file as mdistiller's are.

The load is `load_state_dict(strict=True)`: every tensor of the model comes from the file and
every tensor of the file is used, BatchNorm's `num_batches_tracked` included (Burn has no such
counter; the exporter writes it as 0, which eval mode never reads).
"""

import argparse
import os
import sys

import numpy as np
import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kd_models  # noqa: E402


def load_exported(model, path):
    """Loads the safetensors file at `path` into `model`, strictly."""
    model.load_state_dict(load_file(path), strict=True)
    return model


def relative_difference(got, expected):
    """max |got - expected| / max |expected| (the absolute difference if `expected` is all 0)."""
    diff = float(np.abs(got.astype(np.float64) - expected.astype(np.float64)).max())
    scale = float(np.abs(expected).max())
    return diff / scale if scale > 0 else diff


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="zoo name, e.g. resnet8, wrn-40-2, mlp-256-128")
    parser.add_argument("--classes", type=int, required=True)
    parser.add_argument("--weights", required=True, help="safetensors file exported by the project")
    parser.add_argument("--input-shape", help="CxHxW (default 3x32x32, or the shape of --input)")
    parser.add_argument("--input", help="float32 .npy input, NCHW")
    parser.add_argument("--expect", help=".npy logits to compare with")
    parser.add_argument("--rtol", type=float, default=1e-4, help="largest max |a-b| / max |b| accepted (default 1e-4)")
    parser.add_argument("--save-pth", help="write the loaded model here as {'model': state_dict} (after the check)")
    args = parser.parse_args()

    shape = tuple(int(d) for d in args.input_shape.split("x")) if args.input_shape else None
    if args.input:
        x = torch.from_numpy(np.load(args.input).astype(np.float32, copy=False))
        if x.dim() != 4 or (shape and tuple(x.shape[1:]) != shape):
            sys.exit(f"input {args.input} has shape {tuple(x.shape)}, expected [N, {'x'.join(map(str, shape or ('C', 'H', 'W')))}]")
        shape = tuple(x.shape[1:])
    else:
        shape = shape or (3, 32, 32)
        x = torch.randn((2,) + shape, generator=torch.Generator().manual_seed(0))

    model = kd_models.build(args.model, shape, args.classes)
    try:
        load_exported(model, args.weights).eval()
    except RuntimeError as e:  # missing, unexpected or misshapen tensors: the file is for another model
        sys.exit(f"{args.weights} does not fit {args.model} for {'x'.join(map(str, shape))} and {args.classes} classes:\n{e}")
    with torch.no_grad():
        logits = model(x).numpy()

    if logits.size <= 40:
        print(np.array2string(logits, precision=6, max_line_width=120))
    else:
        print(f"logits {list(logits.shape)}, max |logit| {np.abs(logits).max():.6g}, argmax {logits.argmax(1).tolist()[:16]}")

    if args.expect:
        expected = np.load(args.expect)
        if expected.shape != logits.shape:
            sys.exit(f"expected logits have shape {list(expected.shape)}, the model gives {list(logits.shape)}")
        rel = relative_difference(logits, expected)
        ok = rel <= args.rtol
        print(f"max |logits - expected| / max |expected| = {rel:.3g} ({'within' if ok else 'above'} rtol {args.rtol:g})")
        if not ok:
            sys.exit(1)

    if args.save_pth:
        torch.save({"model": model.state_dict()}, args.save_pth)
        print(f"{args.model} written to {args.save_pth} as {{'model': state_dict}}")


if __name__ == "__main__":
    main()
