"""Writes the golden cases of VID and OFD (tests/golden/vid.json, ofd.json) from mdistiller's own
modules, run in float64 on the CPU.

    python3 xtask/pytorch/make_golden_vid_ofd.py --repo DIR [--out tests/golden]

DIR is a checkout of megvii-research/mdistiller at the commit below, kept outside this
repository: this program imports `mdistiller/distillers/VID.py` and `OFD.py` from there at run
time (as submodules of `mdistiller.distillers`, without running the packages' `__init__.py`,
which would import every distiller), and only the numbers it computes are written here:

    git clone https://github.com/megvii-research/mdistiller /tmp/mdistiller
    git -C /tmp/mdistiller checkout a08d46f
    python3 xtask/pytorch/make_golden_vid_ofd.py --repo /tmp/mdistiller

Reference: mdistiller @ a08d46f.
- VID: the regressors and `log_scales` that `VID.init_vid_modules` builds, their values then set
  to the case's `learnable` ones; `loss` is `vid_loss(regressors[i], log_scales[i], f_s[i],
  f_t[i], eps)` summed over the stages, as `VID.forward_train` sums it (without its weight).
- OFD: the connectors and margins that `OFD.init_ofd_modules` builds from BatchNorm layers whose
  weight and bias are the case's `state` (the teacher's BN before each stage's ReLU), the
  connectors' values then set to the case's `learnable` ones; `loss` is `OFD.ofd_loss(f_s, f_t)`
  (without its weight), the connectors in training mode (BatchNorm on batch statistics), as
  during training. OFD.py imports `scipy.stats.norm` for `cdf` and `pdf`; scipy is not needed:
  a stand-in module with the same two functions (from `math.erfc` and `math.exp`) is installed
  before the import.

Gradients are what `backward()` leaves on the float64 student stage features and on every
learnable tensor. Needs PyTorch (written against 2.9.0) and numpy. Inputs are rounded to 4
decimals; outputs are written with full precision. The same program gives the same files.
"""

import argparse
import importlib
import json
import math
import os
import sys
import types

import numpy as np
import torch

COMMIT = "a08d46f"
REPOSITORY = "https://github.com/megvii-research/mdistiller"


def install_norm_stand_in():
    """`scipy.stats.norm` with the two functions OFD.py calls."""
    norm = types.SimpleNamespace(
        cdf=lambda x: 0.5 * math.erfc(-x / math.sqrt(2.0)),
        pdf=lambda x: math.exp(-x * x / 2.0) / math.sqrt(2.0 * math.pi),
    )
    scipy = types.ModuleType("scipy")
    stats = types.ModuleType("scipy.stats")
    stats.norm = norm
    scipy.stats = stats
    sys.modules.setdefault("scipy", scipy)
    sys.modules.setdefault("scipy.stats", stats)


def load(repo, name):
    """`mdistiller.distillers.<name>` from the checkout, without the packages' __init__.py."""
    root = os.path.join(repo, "mdistiller")
    for pkg, path in [("mdistiller", root), ("mdistiller.distillers", os.path.join(root, "distillers"))]:
        if pkg not in sys.modules:
            module = types.ModuleType(pkg)
            module.__path__ = [path]
            sys.modules[pkg] = module
    return importlib.import_module(f"mdistiller.distillers.{name}")


def rounded(rng, shape, loc=0.0, scale=1.0):
    return np.round(rng.normal(loc, scale, size=shape), 4)


def leaf(array):
    return torch.tensor(array, dtype=torch.float64, requires_grad=True)


def set_param(param, array):
    with torch.no_grad():
        param.data = torch.tensor(array, dtype=torch.float64)
    param.requires_grad_(True)
    param.grad = None


def bare(cls):
    """An instance of a Distiller subclass without its student and teacher networks."""
    obj = cls.__new__(cls)
    torch.nn.Module.__init__(obj)
    return obj


def record(name, method, params, loss, f_s, f_t, s_leaves, learnable, grads):
    """A case in the format of tests/golden/README.md's second section."""
    return {
        "name": name,
        "method": method,
        "params": params,
        "loss": float(loss.item()),
        "student_features": [f.tolist() for f in f_s],
        "teacher_features": [f.tolist() for f in f_t],
        "grad_student_features": [l.grad.tolist() for l in s_leaves],
        "learnable": {k: v.tolist() for k, v in learnable.items()},
        "grad_learnable": grads,
    }


# --------------------------------------------------------------------------------------- VID


def vid_case(vid_mod, rng, name, s_shapes, t_shapes, init_pred_var, eps, spread):
    vid = bare(vid_mod.VID)
    vid.init_pred_var, vid.eps = init_pred_var, eps
    vid.init_vid_modules([s[1] for s in s_shapes], [t[1] for t in t_shapes])
    learnable = {}
    for i, (s, t) in enumerate(zip(s_shapes, t_shapes)):
        reg = vid.regressors[i]
        for j, cin in [(0, s[1]), (2, t[1]), (4, t[1])]:
            w = rounded(rng, (t[1], cin, 1, 1), scale=1.0 / math.sqrt(cin))
            set_param(reg[j].weight, w)
            learnable[f"regressors.{i}.{j}.weight"] = w
        init = math.log(math.exp(init_pred_var - eps) - 1.0)
        alpha = np.round(init + rng.normal(0.0, spread, size=t[1]), 4)
        vid.log_scales[i] = torch.nn.Parameter(torch.tensor(alpha, dtype=torch.float64))
        learnable[f"log_scales.{i}"] = alpha
    f_s = [rounded(rng, s) for s in s_shapes]
    f_t = [rounded(rng, t, scale=2.0) for t in t_shapes]
    s_leaves = [leaf(f) for f in f_s]
    loss = 0
    for i in range(len(s_leaves)):
        loss = loss + vid_mod.vid_loss(vid.regressors[i], vid.log_scales[i], s_leaves[i], torch.tensor(f_t[i], dtype=torch.float64), eps)
    loss.backward()
    grads = {}
    for i in range(len(s_shapes)):
        for j in (0, 2, 4):
            grads[f"regressors.{i}.{j}.weight"] = vid.regressors[i][j].weight.grad.tolist()
        grads[f"log_scales.{i}"] = vid.log_scales[i].grad.tolist()
    return record(name, "vid", {"init_pred_var": init_pred_var, "eps": eps}, loss, f_s, f_t, s_leaves, learnable, grads)


def vid_cases(vid_mod):
    rng = np.random.default_rng(20190601)
    out = []
    for b in (1, 2, 4):
        # Same sizes; the student's map larger (pooled); the teacher's larger (pooled); 1x1 maps.
        stages = [
            ("same", [(b, 3, 4, 4)], [(b, 5, 4, 4)]),
            ("three_stages", [(b, 3, 8, 8), (b, 4, 2, 2), (b, 6, 4, 4)], [(b, 5, 8, 8), (b, 6, 4, 4), (b, 7, 2, 2)]),
            ("vectors", [(b, 8, 1, 1), (b, 8, 1, 1)], [(b, 16, 1, 1), (b, 16, 1, 1)]),
        ]
        for kind, s_shapes, t_shapes in stages:
            # The reference's defaults (all variances start at 5), then variances spread around 1.
            out.append(vid_case(vid_mod, rng, f"{kind}_default_B{b}", s_shapes, t_shapes, 5.0, 1e-5, 0.0))
            out.append(vid_case(vid_mod, rng, f"{kind}_spread_B{b}", s_shapes, t_shapes, 1.0, 1e-5, 1.0))
    return out


# --------------------------------------------------------------------------------------- OFD


def ofd_case(ofd_mod, rng, name, s_shapes, t_shapes):
    ofd = bare(ofd_mod.OFD)
    bns, state = [], {}
    for i, t in enumerate(t_shapes):
        c = t[1]
        weight = np.round(rng.uniform(0.2, 1.5, size=c) * rng.choice([1.0, 1.0, 1.0, -1.0], size=c), 4)
        bias = rounded(rng, c)
        # One channel almost never negative: the margin's -3|weight| branch.
        bias[0] = round(4.0 * abs(weight[0]), 4)
        bn = torch.nn.BatchNorm2d(c)
        with torch.no_grad():
            bn.weight.copy_(torch.tensor(weight))
            bn.bias.copy_(torch.tensor(bias))
        bns.append(bn)
        state[f"bn_before_relu.{i}.weight"] = weight
        state[f"bn_before_relu.{i}.bias"] = bias
    ofd.init_ofd_modules([t[1] for t in t_shapes], [s[1] for s in s_shapes], bns, kernel_size=1)
    ofd.connectors = ofd.connectors.double().train()
    learnable = {}
    for i, (s, t) in enumerate(zip(s_shapes, t_shapes)):
        conv, bn = ofd.connectors.connectors[i][0], ofd.connectors.connectors[i][1]
        w = rounded(rng, (t[1], s[1], 1, 1), scale=math.sqrt(2.0 / t[1]))
        g = rounded(rng, t[1], loc=1.0, scale=0.2)
        beta = rounded(rng, t[1], scale=0.2)
        for p, v, n in [(conv.weight, w, "0.weight"), (bn.weight, g, "1.weight"), (bn.bias, beta, "1.bias")]:
            set_param(p, v)
            learnable[f"connectors.connectors.{i}.{n}"] = v
    f_s = [rounded(rng, s) for s in s_shapes]
    # Teacher pre-activations drawn around each channel's BN statistics.
    f_t = []
    for i, t in enumerate(t_shapes):
        w, b = state[f"bn_before_relu.{i}.weight"], state[f"bn_before_relu.{i}.bias"]
        z = rng.normal(size=t) * np.abs(w)[None, :, None, None] + b[None, :, None, None]
        f_t.append(np.round(z, 4))
    s_leaves = [leaf(f) for f in f_s]
    loss = ofd.ofd_loss(s_leaves, [torch.tensor(f, dtype=torch.float64) for f in f_t])
    loss.backward()
    grads = {}
    for i in range(len(s_shapes)):
        conv, bn = ofd.connectors.connectors[i][0], ofd.connectors.connectors[i][1]
        grads[f"connectors.connectors.{i}.0.weight"] = conv.weight.grad.tolist()
        grads[f"connectors.connectors.{i}.1.weight"] = bn.weight.grad.tolist()
        grads[f"connectors.connectors.{i}.1.bias"] = bn.bias.grad.tolist()
    case = record(name, "ofd", {"kernel_size": 1}, loss, f_s, f_t, s_leaves, learnable, grads)
    case["state"] = {k: v.tolist() for k, v in state.items()}
    return case


def ofd_cases(ofd_mod):
    rng = np.random.default_rng(20191027)
    out = []
    for b in (2, 4):
        stages = [
            ("same", [(b, 3, 4, 4)], [(b, 5, 4, 4)]),
            # The teacher's maps larger in the second and third stages (pooled to the student's).
            ("three_stages", [(b, 3, 8, 8), (b, 4, 4, 4), (b, 6, 2, 2)], [(b, 5, 8, 8), (b, 6, 8, 8), (b, 7, 4, 4)]),
            # [B, W, 1, 1] (an MLP's): at least 4 rows, since the connector's BatchNorm over 2
            # values per channel is ill-conditioned (its gradients cancel to below f32's precision).
            ("vectors", [(2 * b, 8, 1, 1), (2 * b, 8, 1, 1)], [(2 * b, 16, 1, 1), (2 * b, 16, 1, 1)]),
        ]
        for kind, s_shapes, t_shapes in stages:
            for r in range(2):
                out.append(ofd_case(ofd_mod, rng, f"{kind}_{r}_B{s_shapes[0][0]}", s_shapes, t_shapes))
    return out


def write(out_dir, method, code, cases):
    doc = {
        "format": "kd-golden-v1",
        "method": method,
        "reference": {"repository": REPOSITORY, "commit": COMMIT, "code": code},
        "cases": cases,
    }
    with open(os.path.join(out_dir, f"{method}.json"), "w") as f:
        json.dump(doc, f)
        f.write("\n")
    print(f"{method}: {len(cases)} cases")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", required=True, help="mdistiller checkout at " + COMMIT)
    parser.add_argument("--out", default=os.path.join("tests", "golden"))
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    install_norm_stand_in()
    vid_mod, ofd_mod = load(args.repo, "VID"), load(args.repo, "OFD")
    write(args.out, "vid", "mdistiller/distillers/VID.py: VID.init_vid_modules, vid_loss summed over the stages", vid_cases(vid_mod))
    write(args.out, "ofd", "mdistiller/distillers/OFD.py: OFD.init_ofd_modules (margins), ConnectorConvBN, OFD.ofd_loss", ofd_cases(ofd_mod))


if __name__ == "__main__":
    main()
