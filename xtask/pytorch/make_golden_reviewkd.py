"""Writes the golden cases of ReviewKD (tests/golden/reviewkd.json) from mdistiller's own
distiller, run in float64 on the CPU.

    python3 xtask/pytorch/make_golden_reviewkd.py --repo DIR [--out tests/golden]

DIR is a checkout of megvii-research/mdistiller at the commit below, kept outside this
repository: this program imports `distillers/ReviewKD.py` (and the `_base.py` it imports) from
there at run time, without the package's `__init__.py` (which pulls in every distiller and
their dependencies, scipy among them); only the numbers it computes are written here.

    git clone https://github.com/megvii-research/mdistiller /tmp/mdistiller
    git -C /tmp/mdistiller checkout a08d46f
    python3 xtask/pytorch/make_golden_reviewkd.py --repo /tmp/mdistiller

What runs: the reference's `ReviewKD(student, teacher, cfg)` is built with stand-in networks
that return a case's fixed outputs (`feats`, `preact_feats`, `pooled_feat`; the teacher's
`preact_feats` are the case's teacher features), its ABF modules' parameters set from the case's
`learnable` values, in training mode (the ABFs' BatchNorms use batch statistics), and
`forward_train(image, target, epoch=WARMUP_EPOCHS)` with `REVIEWKD_WEIGHT = 1`: its `loss_kd`
is then `hcl_loss` of the fused student maps against the teacher's, without weight or warm-up.
`backward()` on it gives the gradients on the student's stage features (the stem's is zero: the
reference never reads `feats[0]`), on its pooled embedding and on every ABF parameter.
`IN_CHANNELS`, `OUT_CHANNELS`, `SHAPES` and `OUT_SHAPES` are set from the case's shapes, as
mdistiller's per-architecture configs set them.

`learnable` is keyed by the Rust module's parameter paths (`abfs.{i}.conv1.weight`,
`abfs.{i}.bn1.gamma`, ...; `abfs.0` is the pooled embedding's ABF, as the reference's
`self.abfs[0]`); `MAPPING` below gives the PyTorch name of each. BatchNorm's running statistics
are not parameters and do not enter the loss in training mode.

Needs PyTorch (written against 2.9.0). Inputs are rounded to 4 decimals; outputs are written
with full precision. The same program gives the same file (fixed seeds).
"""

import argparse
import importlib.util
import json
import os
import sys
import types
from types import SimpleNamespace

import torch
import torch.nn as nn

COMMIT = "a08d46f"

# Rust parameter name -> PyTorch name inside one ABF.
MAPPING = {
    "conv1.weight": "conv1.0.weight",
    "bn1.gamma": "conv1.1.weight",
    "bn1.beta": "conv1.1.bias",
    "conv2.weight": "conv2.0.weight",
    "bn2.gamma": "conv2.1.weight",
    "bn2.beta": "conv2.1.bias",
    "att_conv.weight": "att_conv.0.weight",
    "att_conv.bias": "att_conv.0.bias",
}


def load_reviewkd(repo):
    """The module `distillers/ReviewKD.py`, its relative import of `_base` resolved in a
    stand-in package (so the package's `__init__.py` does not run)."""
    folder = os.path.join(repo, "mdistiller", "distillers")
    package = types.ModuleType("_mdistiller_distillers")
    package.__path__ = [folder]
    sys.modules[package.__name__] = package
    spec = importlib.util.spec_from_file_location(package.__name__ + ".ReviewKD", os.path.join(folder, "ReviewKD.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class FixedNet(nn.Module):
    """A stand-in network: returns the given logits and feature dictionary for any input."""

    def __init__(self, logits, feats):
        super().__init__()
        self.logits, self.feats = logits, feats

    def forward(self, image):
        return self.logits, self.feats


def rounded(shape, gen, scale=1.0, shift=0.0):
    t = torch.randn(*shape, generator=gen, dtype=torch.float64) * scale + shift
    return torch.round(t * 1e4) / 1e4


def nested(t):
    return t.detach().tolist()


def make_case(mod, name, batch, student, teacher, seed):
    """`student`/`teacher`: ([(C, H)] of feats (the stem first), embedding width)."""
    gen = torch.Generator().manual_seed(seed)
    (s_stages, s_dim), (t_stages, t_dim) = student, teacher
    s_feats = [rounded((batch, c, h, h), gen).requires_grad_(True) for c, h in s_stages]
    s_pool = rounded((batch, s_dim), gen).requires_grad_(True)
    t_feats = [rounded((batch, c, h, h), gen) for c, h in t_stages]
    t_pool = rounded((batch, t_dim), gen)
    classes = 3
    labels = torch.arange(batch) % classes
    s_out = FixedNet(torch.zeros(batch, classes, dtype=torch.float64), {"feats": s_feats, "preact_feats": s_feats, "pooled_feat": s_pool})
    t_out = FixedNet(torch.zeros(batch, classes, dtype=torch.float64), {"feats": t_feats, "preact_feats": t_feats, "pooled_feat": t_pool})

    # The reference's lists: shallow to deep for the channels, deep to shallow for the sizes.
    in_channels = [c for c, _ in s_stages[1:]] + [s_dim]
    out_channels = [c for c, _ in t_stages[1:]] + [t_dim]
    shapes = ([h for _, h in s_stages[1:]] + [1])[::-1]
    out_shapes = ([h for _, h in t_stages[1:]] + [1])[::-1]
    cfg = SimpleNamespace(
        REVIEWKD=SimpleNamespace(
            CE_WEIGHT=1.0,
            REVIEWKD_WEIGHT=1.0,
            WARMUP_EPOCHS=20,
            SHAPES=shapes,
            OUT_SHAPES=out_shapes,
            IN_CHANNELS=in_channels,
            OUT_CHANNELS=out_channels,
            MAX_MID_CHANNEL=512,
            STU_PREACT=False,
        )
    )
    distiller = mod.ReviewKD(s_out, t_out, cfg).double()
    distiller.train()

    learnable = {}
    for i, abf in enumerate(distiller.abfs):
        torch_params = dict(abf.named_parameters())
        for rust, torch_name in MAPPING.items():
            if torch_name not in torch_params:
                continue
            p = torch_params[torch_name]
            if rust.endswith("gamma"):
                value = rounded(p.shape, gen, 0.2, 1.0)
            elif rust.endswith("beta") or rust.endswith("bias"):
                value = rounded(p.shape, gen, 0.1)
            else:
                fan_in = p[0].numel()
                value = rounded(p.shape, gen, fan_in**-0.5)
            with torch.no_grad():
                p.copy_(value)
            learnable[f"abfs.{i}.{rust}"] = p
    image = torch.zeros(batch, 1, 1, 1, dtype=torch.float64)
    losses = distiller.forward_train(image, labels, epoch=cfg.REVIEWKD.WARMUP_EPOCHS)[1]
    loss = losses["loss_kd"]
    loss.backward()

    def grad(t):
        return nested(t.grad if t.grad is not None else torch.zeros_like(t))

    return {
        "name": name,
        "method": "reviewkd",
        "params": {
            "IN_CHANNELS": in_channels,
            "OUT_CHANNELS": out_channels,
            "SHAPES": shapes,
            "OUT_SHAPES": out_shapes,
            "MAX_MID_CHANNEL": 512,
            "STU_PREACT": False,
        },
        "loss": loss.item(),
        "student_features": [nested(f) for f in s_feats],
        "teacher_features": [nested(f) for f in t_feats],
        "grad_student_features": [grad(f) for f in s_feats],
        "student_embedding": nested(s_pool),
        "teacher_embedding": nested(t_pool),
        "grad_student_embedding": grad(s_pool),
        "learnable": {k: nested(p) for k, p in learnable.items()},
        "grad_learnable": {k: grad(p) for k, p in learnable.items()},
    }


# (name, batch, student (stages with the stem first, embedding), teacher, seed)
CASES = [
    # A CIFAR ResNet's layout, scaled down: the same sizes on both sides (8, 4, 2), other widths.
    ("resnet_like_same_sizes", 3, ([(2, 8), (3, 8), (4, 4), (5, 2)], 5), ([(3, 8), (4, 8), (6, 4), (7, 2)], 7), 1),
    # The teacher's maps half the student's (outputs resized down) and a 6 -> 4 resize (not by
    # a factor of 2); the residuals go up to the student's sizes.
    ("teacher_smaller", 2, ([(2, 8), (3, 8), (4, 6), (4, 2)], 6), ([(2, 4), (5, 4), (5, 4), (6, 1)], 4), 2),
    # The teacher's maps twice the student's (outputs resized up), one stage after the stem.
    ("teacher_larger", 4, ([(2, 4), (3, 4), (6, 2)], 6), ([(2, 8), (2, 8), (3, 4)], 5), 3),
    # An MLP pair: every map 1x1 (no pooling level applies), BatchNorm over the batch only.
    ("mlp_1x1", 4, ([(8, 1), (8, 1), (8, 1)], 8), ([(16, 1), (16, 1), (16, 1)], 16), 4),
    # No stage after the stem: the embedding alone, one ABF without fusion.
    ("embedding_only", 3, ([(2, 4)], 4), ([(3, 4)], 6), 5),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", required=True, help="a checkout of megvii-research/mdistiller at " + COMMIT)
    parser.add_argument("--out", default="tests/golden")
    args = parser.parse_args()
    torch.use_deterministic_algorithms(True)
    mod = load_reviewkd(args.repo)
    cases = [make_case(mod, *case) for case in CASES]
    doc = {
        "format": "kd-golden-v1",
        "method": "reviewkd",
        "reference": {
            "repository": "https://github.com/megvii-research/mdistiller",
            "commit": COMMIT,
            "file": "mdistiller/distillers/ReviewKD.py",
            "run": "ReviewKD.forward_train (ABF, hcl_loss) with stand-in networks, float64, training mode",
            "generator": "xtask/pytorch/make_golden_reviewkd.py",
        },
        "cases": cases,
    }
    path = os.path.join(args.out, "reviewkd.json")
    with open(path, "w") as f:
        json.dump(doc, f)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {path}")


if __name__ == "__main__":
    main()
