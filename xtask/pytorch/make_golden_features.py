"""Writes the golden cases of the feature and embedding baselines AT, NST, SP, PKT, CC and KDSVD
(tests/golden/{at,nst,sp,pkt,cc,kdsvd}.json) from the reference implementations, run in float64
on the CPU.

    python3 xtask/pytorch/make_golden_features.py --mdistiller DIR --repdistiller DIR [--out tests/golden] [--only at cc ...]

The two directories are checkouts of the reference code at the commits below, kept outside this
repository; this program imports the loss functions from there at run time and writes only the
numbers they compute:

    git clone https://github.com/megvii-research/mdistiller /tmp/mdistiller
    git -C /tmp/mdistiller checkout a08d46f
    git clone https://github.com/HobbitLong/RepDistiller /tmp/RepDistiller
    git -C /tmp/RepDistiller checkout b84f547

References:
- mdistiller @ a08d46f, mdistiller/distillers/: `AT.py` (`at_loss(g_s, g_t, p)`), `NST.py`
  (`nst_loss(g_s, g_t)`), `SP.py` (`sp_loss(g_s, g_t)`, called with the last stage only, as the
  `SP` distiller does), `PKT.py` (`pkt_loss(f_s, f_t, eps)`), `KDSVD.py` (`kdsvd_loss(g_s, g_t,
  k)`, with `torch.svd`'s arbitrary signs fixed by `CanonicalSvdSign`, whose docstring says
  why). Each file is loaded on its own (its `from ._base import Distiller` is served by a stub
  module, since only the loss functions are called).
- RepDistiller @ b84f547: `distiller_zoo/CC.py` (`Correlation`) on the outputs of two
  `models/util.py` `LinearEmbed` heads, one on the student's and one on the teacher's penultimate
  embedding, as `helper/loops.py` (distill == 'correlation') and `train_student.py` use them;
  both heads are trained, so their weights and gradients are in the case (`learnable`,
  `grad_learnable`, PyTorch's layout: weight `[out, in]`; set to rounded uniform values in
  about `+-1/sqrt(fan_in)` so that they are exact in the file).

`loss` is the reference function's value, without the method's loss weight and without CE; the
gradients are what `backward()` leaves on the float64 student leaves (and on the heads of CC).
Inputs are rounded to 4 decimals; the same program gives the same files (fixed seeds).
Needs PyTorch (written against 2.9.0) and numpy.
"""

import argparse
import importlib.util
import json
import os
import sys
import types

import numpy as np
import torch

MDISTILLER = "a08d46f"
REPDISTILLER = "b84f547"


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_mdistiller(repo, stem):
    # The distiller files import `._base.Distiller`; a stub package serves it.
    package = types.ModuleType("mdref")
    package.__path__ = []
    base = types.ModuleType("mdref._base")
    base.Distiller = torch.nn.Module
    sys.modules["mdref"] = package
    sys.modules["mdref._base"] = base
    path = os.path.join(repo, "mdistiller", "distillers", f"{stem}.py")
    spec = importlib.util.spec_from_file_location(f"mdref.{stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rounded(rng, shape, scale, positive):
    x = rng.normal(0.0, scale, size=shape)
    if positive:
        # Stage outputs come after a ReLU: non-negative, with some exact zeros.
        x = np.maximum(x, 0.0) + np.abs(rng.normal(0.0, 0.05 * scale, size=shape)) * (x > -0.3 * scale)
    return np.round(x, 4)


def leaves(arrays):
    return [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]


def consts(arrays):
    return [torch.tensor(a, dtype=torch.float64) for a in arrays]


def grads(ts):
    return [(t.grad if t.grad is not None else torch.zeros_like(t)).tolist() for t in ts]


def stage_case(method, name, params, s_arrays, t_arrays, fn):
    s, t = leaves(s_arrays), consts(t_arrays)
    loss = fn(s, t)
    loss = loss.sum() if loss.dim() > 0 else loss
    loss.backward()
    return {
        "name": name,
        "method": method,
        "params": params,
        "student_features": [a.tolist() for a in s_arrays],
        "teacher_features": [a.tolist() for a in t_arrays],
        "loss": float(loss.item()),
        "grad_student_features": grads(s),
    }


# Stage layouts, (channels, size) per stage, student then teacher: equal sizes; the student's
# maps larger (pooled down, including a non-integer ratio); the teacher's larger; one stage.
LAYOUTS = {
    "same": ([(4, 8), (6, 4), (8, 2)], [(8, 8), (12, 4), (16, 2)]),
    "mixed": ([(4, 8), (6, 6), (8, 2)], [(8, 4), (12, 4), (16, 4)]),
    "one": ([(5, 5)], [(3, 3)]),
}


def stage_arrays(rng, batch, layout, scale=1.0):
    return [rounded(rng, (batch, c, h, h), scale, True) for c, h in layout]


def at_cases(md):
    at = load_mdistiller(md, "AT")
    rng = np.random.default_rng(2017)
    out = []
    for p in (2.0, 4.0):
        for kind, (ls, lt) in LAYOUTS.items():
            for batch in (1, 4, 8):
                s, t = stage_arrays(rng, batch, ls), stage_arrays(rng, batch, lt)
                out.append(stage_case("at", f"{kind}_p{p:g}_B{batch}", {"p": p}, s, t, lambda a, b: at.at_loss(a, b, p)))
    s, t = stage_arrays(rng, 8, [(32, 8), (64, 4)], 30.0), stage_arrays(rng, 8, [(48, 8), (96, 2)], 30.0)
    out.append(stage_case("at", "large_p2_B8", {"p": 2.0}, s, t, lambda a, b: at.at_loss(a, b, 2.0)))
    return out


def nst_cases(md):
    nst = load_mdistiller(md, "NST")
    rng = np.random.default_rng(2018)
    out = []
    for kind, (ls, lt) in LAYOUTS.items():
        for batch in (1, 4, 8):
            s, t = stage_arrays(rng, batch, ls), stage_arrays(rng, batch, lt)
            out.append(stage_case("nst", f"{kind}_B{batch}", {}, s, t, nst.nst_loss))
    s, t = stage_arrays(rng, 8, [(32, 8), (64, 4)], 30.0), stage_arrays(rng, 8, [(48, 8), (96, 2)], 30.0)
    out.append(stage_case("nst", "large_B8", {}, s, t, nst.nst_loss))
    return out


def sp_cases(md):
    sp = load_mdistiller(md, "SP")
    rng = np.random.default_rng(2019)
    out = []
    # The SP distiller passes the last stage only: the case holds that stage.
    for kind, (s_shape, t_shape) in {
        "same": ((8, 4, 4), (16, 4, 4)),
        "mixed": ((8, 4, 4), (12, 2, 2)),
        "vector": ((6, 1, 1), (10, 1, 1)),
    }.items():
        for batch in (1, 4, 8):
            s = [rounded(rng, (batch,) + s_shape, 1.0, True)]
            t = [rounded(rng, (batch,) + t_shape, 1.0, True)]
            out.append(stage_case("sp", f"{kind}_B{batch}", {}, s, t, sp.sp_loss))
    s = [rounded(rng, (8, 64, 4, 4), 30.0, True)]
    t = [rounded(rng, (8, 128, 2, 2), 30.0, True)]
    out.append(stage_case("sp", "large_B8", {}, s, t, sp.sp_loss))
    return out


def embedding_case(method, name, params, s_array, t_array, fn):
    s = torch.tensor(s_array, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(t_array, dtype=torch.float64)
    loss = fn(s, t)
    loss.backward()
    return {
        "name": name,
        "method": method,
        "params": params,
        "student_embedding": s_array.tolist(),
        "teacher_embedding": t_array.tolist(),
        "loss": float(loss.item()),
        "grad_student_embedding": s.grad.tolist(),
    }


def pkt_cases(md):
    pkt = load_mdistiller(md, "PKT")
    rng = np.random.default_rng(2020)
    out = []
    for eps in (1e-7, 1e-3):
        for dims in ((8, 16), (12, 12)):
            for batch in (1, 4, 8):
                s = rounded(rng, (batch, dims[0]), 1.0, True)
                t = rounded(rng, (batch, dims[1]), 1.0, True)
                name = f"eps{eps:g}_D{dims[0]}x{dims[1]}_B{batch}"
                out.append(embedding_case("pkt", name, {"eps": eps}, s, t, lambda a, b: pkt.pkt_loss(a, b, eps)))
    # Signed embeddings (negative cosines) and large values.
    s, t = rounded(rng, (8, 10), 1.0, False), rounded(rng, (8, 6), 1.0, False)
    out.append(embedding_case("pkt", "signed_B8", {"eps": 1e-7}, s, t, lambda a, b: pkt.pkt_loss(a, b, 1e-7)))
    s, t = rounded(rng, (8, 64), 50.0, True), rounded(rng, (8, 128), 50.0, True)
    out.append(embedding_case("pkt", "large_B8", {"eps": 1e-7}, s, t, lambda a, b: pkt.pkt_loss(a, b, 1e-7)))
    return out


def cc_cases(rep):
    correlation = load(os.path.join(rep, "distiller_zoo", "CC.py"), "repdistiller_cc").Correlation
    util_path = os.path.join(rep, "models", "util.py")
    linear_embed = load(util_path, "repdistiller_util").LinearEmbed
    rng = np.random.default_rng(2021)
    out = []
    for feat_dim in (4, 16):
        for dims in ((8, 16), (12, 12)):
            # One row has no neighbour: the reference's mean is over an empty set (NaN).
            for batch in (2, 4, 8):
                out.append(cc_case(correlation, linear_embed, rng, f"dim{feat_dim}_D{dims[0]}x{dims[1]}_B{batch}", batch, dims, feat_dim, 1.0))
    out.append(cc_case(correlation, linear_embed, rng, "large_B8", 8, (64, 128), 32, 20.0))
    return out


def cc_case(correlation, linear_embed, rng, name, batch, dims, feat_dim, scale):
    s_array = rounded(rng, (batch, dims[0]), scale, True)
    t_array = rounded(rng, (batch, dims[1]), scale, True)
    embed_s, embed_t = linear_embed(dims[0], feat_dim).double(), linear_embed(dims[1], feat_dim).double()
    learnable = {}
    for prefix, head in (("embed_s", embed_s), ("embed_t", embed_t)):
        for pname, param in head.named_parameters():
            value = np.round(rng.uniform(-1.0, 1.0, size=tuple(param.shape)) / np.sqrt(param.shape[-1] if param.dim() > 1 else dims[0]), 4)
            with torch.no_grad():
                param.copy_(torch.tensor(value, dtype=torch.float64))
            learnable[f"{prefix}.{pname}"] = param
    s = torch.tensor(s_array, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(t_array, dtype=torch.float64)
    loss = correlation()(embed_s(s), embed_t(t))
    loss.backward()
    return {
        "name": name,
        "method": "cc",
        "params": {"feat_dim": feat_dim},
        "student_embedding": s_array.tolist(),
        "teacher_embedding": t_array.tolist(),
        "learnable": {k: v.detach().tolist() for k, v in learnable.items()},
        "loss": float(loss.item()),
        "grad_student_embedding": s.grad.tolist(),
        "grad_learnable": {k: v.grad.tolist() for k, v in learnable.items()},
    }


class CanonicalSvdSign:
    """`torch.svd` with the sign of every singular pair fixed: the entry of largest magnitude of
    each right singular vector is made negative (the left one flips with it, so `U S V^T` is
    unchanged; a flip by a constant sign is what `torch.svd`'s own backward assumes).

    KDSVD's value depends on these signs (the RBF compares the teacher's vectors of consecutive
    stages entry by entry), and LAPACK leaves them to the implementation: MKL, OpenBLAS and
    cuSOLVER differ, and MKL's own choice follows no simple rule (on non-negative maps it gives
    the top vector negative entries about 93 % of the time). The cases fix them by this rule,
    which the project implements; `agreed` counts how often MKL had chosen the same for the top
    vector.
    """

    def __init__(self):
        self.original = torch.svd
        self.calls = 0
        self.agreed = 0

    def __call__(self, x, *args, **kwargs):
        u, s, v = self.original(x, *args, **kwargs)
        idx = v.detach().abs().argmax(dim=-2, keepdim=True)
        sign = -torch.sign(torch.gather(v.detach(), -2, idx))
        sign[sign == 0] = 1
        # Per sample, the top singular vector (the one KDSVD with k = 1 reads).
        self.calls += sign.shape[0]
        self.agreed += int((sign[..., 0, 0] > 0).sum())
        return u * sign, s, v * sign

    def __enter__(self):
        torch.svd = self
        return self

    def __exit__(self, *exc):
        torch.svd = self.original


def kdsvd_cases(md):
    kdsvd = load_mdistiller(md, "KDSVD")
    rng = np.random.default_rng(2018_09)
    out = []
    layouts = {
        "same": ([(4, 8), (6, 4), (8, 2)], [(8, 8), (12, 4), (16, 2)]),
        "wide": ([(2, 8), (4, 6), (4, 4)], [(4, 8), (8, 6), (8, 4)]),
        "vector": ([(8, 1), (8, 1), (8, 1)], [(16, 1), (16, 1), (16, 1)]),
    }
    with CanonicalSvdSign() as svd:
        for k in (1, 2):
            for kind, (ls, lt) in layouts.items():
                if kind == "vector" and k > 1:
                    continue
                for batch in (1, 4, 8):
                    s, t = stage_arrays(rng, batch, ls), stage_arrays(rng, batch, lt)
                    out.append(stage_case("kdsvd", f"{kind}_k{k}_B{batch}", {"k": k}, s, t, lambda a, b: kdsvd.kdsvd_loss(a, b, k)))
        s, t = stage_arrays(rng, 8, [(16, 8), (32, 4)], 30.0), stage_arrays(rng, 8, [(32, 8), (64, 4)], 30.0)
        out.append(stage_case("kdsvd", "large_k1_B8", {"k": 1}, s, t, lambda a, b: kdsvd.kdsvd_loss(a, b, 1)))
    print(f"kdsvd: MKL's own sign of the top singular vector agreed with the rule for {svd.agreed} of {svd.calls} matrices")
    return out


MDISTILLER_CODE = {
    "at": "mdistiller/distillers/AT.py: at_loss(g_s, g_t, p) on the stages feats[1:]",
    "nst": "mdistiller/distillers/NST.py: nst_loss(g_s, g_t) on the stages feats[1:]",
    "sp": "mdistiller/distillers/SP.py: sp_loss([f_s], [f_t]) on the last stage feats[-1]",
    "pkt": "mdistiller/distillers/PKT.py: pkt_loss(f_s, f_t, eps) on pooled_feat",
    "kdsvd": "mdistiller/distillers/KDSVD.py: kdsvd_loss(g_s, g_t, k) on the stages feats[1:], torch.svd's signs fixed (CanonicalSvdSign)",
}


def write(out_dir, method, cases, reference):
    path = os.path.join(out_dir, f"{method}.json")
    with open(path, "w") as f:
        json.dump({"format": "kd-golden-v1", "method": method, "reference": reference, "cases": cases}, f)
        f.write("\n")
    print(f"{path}: {len(cases)} cases")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mdistiller", required=True)
    parser.add_argument("--repdistiller", required=True)
    parser.add_argument("--out", default=os.path.join("tests", "golden"))
    parser.add_argument("--only", nargs="*", help="methods to write (default: all)")
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    md_ref = {"repository": "https://github.com/megvii-research/mdistiller", "commit": MDISTILLER}
    makers = {
        "at": lambda: at_cases(args.mdistiller),
        "nst": lambda: nst_cases(args.mdistiller),
        "sp": lambda: sp_cases(args.mdistiller),
        "pkt": lambda: pkt_cases(args.mdistiller),
        "kdsvd": lambda: kdsvd_cases(args.mdistiller),
        "cc": lambda: cc_cases(args.repdistiller),
    }
    for method, make in makers.items():
        if args.only and method not in args.only:
            continue
        if method == "cc":
            reference = {
                "repository": "https://github.com/HobbitLong/RepDistiller",
                "commit": REPDISTILLER,
                "code": "distiller_zoo/CC.py: Correlation()(embed_s(f_s), embed_t(f_t)) with models/util.py LinearEmbed heads, as helper/loops.py uses them",
            }
        else:
            reference = dict(md_ref, code=MDISTILLER_CODE[method])
        write(args.out, method, make(), reference)


if __name__ == "__main__":
    main()
