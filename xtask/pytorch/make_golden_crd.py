"""Writes the golden cases of CRD (tests/golden/crd.json) from the authors' own criterion and
memory, run in float64 on the CPU.

    python3 xtask/pytorch/make_golden_crd.py --repo DIR [--out tests/golden]

DIR is a checkout of RepDistiller at the commit below, kept outside this repository: this
program imports `crd/criterion.py` (`CRDLoss`, with its `Embed` heads and `ContrastLoss`) and
`crd/memory.py` (`ContrastMemory`) from there at run time; only the numbers it computes are
written here. For example:

    git clone https://github.com/HobbitLong/RepDistiller /tmp/RepDistiller
    git -C /tmp/RepDistiller checkout b84f547
    python3 xtask/pytorch/make_golden_crd.py --repo /tmp/RepDistiller

Reference: github.com/HobbitLong/RepDistiller @ b84f547. The one change made at run time:
`AliasMethod.cuda` is replaced by a no-op (the constructor of `ContrastMemory` moves its unused
sampler to the GPU; the draws here are passed in as `contrast_idx`, so the sampler never runs).
Default dtype float64, so the memory banks and the `params` buffer holding Z are float64.

Each case is one or more calls of `CRDLoss.forward(f_s, f_t, idx, contrast_idx)`, as
RepDistiller's `train_distill` makes them; the last call is the case:
- `student_embedding`, `teacher_embedding`: the pooled features `f_s`, `f_t` of that call.
- `draws.idx` (the batch's dataset indices) and `draws.contrast_idx` (`[B, nce_k + 1]`, the
  sample itself first), drawn as `CIFAR100InstanceSample.__getitem__` draws them in mode
  'exact': `np.random.choice(cls_negative[target], k, replace=k > len(cls_negative[target]))`
  (re-stated here: that class needs the CIFAR files). `state.labels` are the dataset's labels.
- `learnable`: the heads' parameters by their PyTorch names (`embed_s.weight` is
  `[feat_dim, s_dim]`), and `grad_learnable` what `backward()` leaves on them.
- `state.memory_v1`, `state.memory_v2` (student side, teacher side) before the call and
  `state.memory_v1_after`, `state.memory_v2_after` after its momentum update; `state.z_before`
  (only when an earlier call fixed it) and `state.z_after`: `[Z_v1, Z_v2]`.
- `loss`: the value `CRDLoss.forward` returns (`s_loss + t_loss`, no weight, no CE);
  `grad_student_embedding`: d loss / d f_s.

Needs PyTorch (written against 2.9.0) and numpy. Inputs are rounded to 4 decimals; outputs are
written with full precision. The same program gives the same file (fixed seeds).
"""

import argparse
import importlib
import json
import os
import sys
from types import SimpleNamespace

import numpy as np
import torch

COMMIT = "b84f547"


def load_crd(repo):
    sys.path.insert(0, os.path.abspath(repo))
    memory = importlib.import_module("crd.memory")
    memory.AliasMethod.cuda = lambda self: None
    criterion = importlib.import_module("crd.criterion")
    return criterion.CRDLoss


def rounded(rng, shape, scale=1.0):
    return np.round(rng.normal(0.0, scale, size=shape), 4)


def exact_draws(rng, labels, idx, k):
    """RepDistiller's 'exact' contrast indices for the samples `idx`."""
    labels = np.asarray(labels)
    rows = []
    for i in idx:
        negatives = np.nonzero(labels != labels[i])[0]
        replace = k > len(negatives)
        rows.append(np.hstack(([i], rng.choice(negatives, k, replace=replace))))
    return np.asarray(rows, dtype=np.int64)


def tensor(values):
    return torch.tensor(np.asarray(values), dtype=torch.float64)


def run_case(crd_class, name, seed, n_data, classes, s_dim, t_dim, feat_dim, nce_k, nce_t, nce_m, batch, calls):
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    opt = SimpleNamespace(s_dim=s_dim, t_dim=t_dim, feat_dim=feat_dim, nce_k=nce_k, nce_t=nce_t, nce_m=nce_m, n_data=n_data)
    crd = crd_class(opt)
    # Round the reference's initial values to 4 decimals (the memory as ContrastMemory draws it,
    # uniform in +-1/sqrt(feat_dim/3); the heads as nn.Linear draws them).
    with torch.no_grad():
        for buf in ("memory_v1", "memory_v2"):
            getattr(crd.contrast, buf).copy_(torch.round(getattr(crd.contrast, buf), decimals=4))
        for head in (crd.embed_s.linear, crd.embed_t.linear):
            head.weight.copy_(torch.round(head.weight, decimals=4))
            head.bias.copy_(torch.round(head.bias, decimals=4))
    labels = [int(c) for c in rng.permutation(np.arange(n_data) % classes)]
    order = rng.permutation(n_data)
    for call in range(calls):
        idx = np.sort(order[call * batch:(call + 1) * batch])
        contrast_idx = exact_draws(rng, labels, idx, nce_k)
        f_s = tensor(rounded(rng, (batch, s_dim))).requires_grad_(True)
        f_t = tensor(rounded(rng, (batch, t_dim)))
        z_before = crd.contrast.params[2:4].tolist()
        before = (crd.contrast.memory_v1.clone(), crd.contrast.memory_v2.clone())
        crd.zero_grad()
        loss = crd(f_s, f_t, torch.tensor(idx, dtype=torch.long), torch.tensor(contrast_idx, dtype=torch.long))
        loss.backward()
    state = {
        "labels": labels,
        "memory_v1": before[0].tolist(),
        "memory_v2": before[1].tolist(),
        "memory_v1_after": crd.contrast.memory_v1.tolist(),
        "memory_v2_after": crd.contrast.memory_v2.tolist(),
        "z_after": crd.contrast.params[2:4].tolist(),
    }
    if z_before[0] > 0:
        state["z_before"] = z_before
    heads = {"embed_s": crd.embed_s.linear, "embed_t": crd.embed_t.linear}
    return {
        "name": name,
        "method": "crd",
        "params": {"feat_dim": feat_dim, "nce_k": nce_k, "nce_t": nce_t, "nce_m": nce_m, "n_data": n_data, "s_dim": s_dim, "t_dim": t_dim},
        "student_embedding": f_s.detach().tolist(),
        "teacher_embedding": f_t.tolist(),
        "labels": [labels[i] for i in idx],
        "loss": float(loss.item()),
        "grad_student_embedding": f_s.grad.tolist(),
        "learnable": {f"{h}.{p}": getattr(m, p).detach().tolist() for h, m in heads.items() for p in ("weight", "bias")},
        "grad_learnable": {f"{h}.{p}": getattr(m, p).grad.tolist() for h, m in heads.items() for p in ("weight", "bias")},
        "draws": {"idx": [int(i) for i in idx], "contrast_idx": contrast_idx.tolist()},
        "state": state,
    }


def cases(crd_class):
    common = dict(n_data=24, classes=3, s_dim=6, t_dim=10, feat_dim=5, batch=4)
    return [
        # The first batch: Z is fixed from it.
        run_case(crd_class, "first_step_defaults_t", 1, nce_k=8, nce_t=0.07, nce_m=0.5, calls=1, **common),
        # The third batch: the memory moved twice and Z comes from the first.
        run_case(crd_class, "third_step_fixed_z", 2, nce_k=8, nce_t=0.07, nce_m=0.5, calls=3, **common),
        # Another temperature and momentum, equal widths, more classes.
        run_case(crd_class, "second_step_t05_m09", 3, n_data=30, classes=5, s_dim=7, t_dim=7, feat_dim=4, nce_k=12, nce_t=0.5,
                 nce_m=0.9, batch=5, calls=2),
        # More negatives than a class has: drawn with replacement, as the reference's sampler.
        run_case(crd_class, "replacement_k_over_negatives", 4, n_data=12, classes=2, s_dim=3, t_dim=8, feat_dim=6, nce_k=9,
                 nce_t=0.1, nce_m=0.5, batch=3, calls=2),
        # A batch of one sample.
        run_case(crd_class, "batch_of_one", 5, n_data=10, classes=2, s_dim=4, t_dim=5, feat_dim=3, nce_k=4, nce_t=0.07,
                 nce_m=0.5, batch=1, calls=2),
        # Wider: 10 classes, feat_dim 16, 40 negatives of 72, the reference's T and momentum.
        run_case(crd_class, "wider_ten_classes", 6, n_data=80, classes=10, s_dim=12, t_dim=20, feat_dim=16, nce_k=40,
                 nce_t=0.07, nce_m=0.5, batch=8, calls=2),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", required=True, help="checkout of HobbitLong/RepDistiller")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "golden"))
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    document = {
        "format": "kd-golden-v1",
        "method": "crd",
        "reference": {"repository": "https://github.com/HobbitLong/RepDistiller", "commit": COMMIT,
                      "files": ["crd/criterion.py", "crd/memory.py"]},
        "cases": cases(load_crd(args.repo)),
    }
    path = os.path.join(args.out, "crd.json")
    with open(path, "w") as f:
        json.dump(document, f)
    print(f"wrote {len(document['cases'])} cases to {os.path.normpath(path)}")


if __name__ == "__main__":
    main()
