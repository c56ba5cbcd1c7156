"""Writes the golden cases of DIST (tests/golden/dist.json) from the authors' own loss, run in
float64 on the CPU.

    python3 xtask/pytorch/make_golden_dist.py --repo DIR [--out tests/golden]

DIR is a checkout (or `git archive` export) of the authors' classification code at the commit
below, kept outside this repository: this program imports the loss from there at run time, and
only the numbers it computes are written here. For example:

    git clone https://github.com/hunto/image_classification_sota /tmp/image_classification_sota
    git -C /tmp/image_classification_sota checkout 6f7a70a
    python3 xtask/pytorch/make_golden_dist.py --repo /tmp/image_classification_sota

Reference: github.com/hunto/image_classification_sota @ 6f7a70a (the DIST_KD repository's
`classification` submodule), `lib/models/losses/dist_kd.py`: the module `DIST(beta, gamma, tau)`,
imported as is (the file needs only `torch.nn`). The loss is the value its `forward` returns and
the gradient is what `backward()` leaves on the student's logits, a float64 leaf tensor.

Needs PyTorch (written against 2.9.0) and numpy. Inputs are rounded to 4 decimals; outputs are
written with full precision. The same program gives the same file (fixed seeds).
"""

import argparse
import importlib.util
import json
import os

import numpy as np
import torch

COMMIT = "6f7a70a"


def load_dist(repo):
    path = os.path.join(repo, "lib", "models", "losses", "dist_kd.py")
    spec = importlib.util.spec_from_file_location("dist_kd", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.DIST


def logits(rng, rows, classes, scale):
    return np.round(rng.normal(0.0, scale, size=(rows, classes)), 4)


def case(dist_class, name, student, teacher, labels, tau, beta, gamma):
    s = torch.tensor(student, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(teacher, dtype=torch.float64)
    loss = dist_class(beta=beta, gamma=gamma, tau=tau)(s, t)
    loss.backward()
    return {
        "name": name,
        "method": "dist",
        "params": {"temperature": tau, "beta": beta, "gamma": gamma},
        "student_logits": student.tolist(),
        "teacher_logits": teacher.tolist(),
        "labels": [int(l) for l in labels],
        "loss": float(loss.item()),
        "grad_student_logits": s.grad.tolist(),
    }


def cases(dist_class):
    rng = np.random.default_rng(20221205)
    out = []
    # (tau, beta, gamma): the official defaults, then larger temperatures and other weights.
    for tau, beta, gamma in [(1.0, 1.0, 1.0), (4.0, 2.0, 2.0), (4.0, 1.0, 0.5)]:
        for rows in (1, 4, 8):
            # Not 2 classes: two 2-vectors correlate at exactly +-1, so the inter-class term's
            # gradient there is its eps alone, amplified by cancellation (PyTorch's own float32
            # differs from its float64 by up to 7e-5 there); 3 is the smallest meaningful count.
            for classes in (3, 10, 100):
                labels = rng.integers(0, classes, size=rows)
                base = f"tau{tau:g}_b{beta:g}_g{gamma:g}_B{rows}_C{classes}"
                s, t = logits(rng, rows, classes, 2.0), logits(rng, rows, classes, 2.0)
                out.append(case(dist_class, f"random_{base}", s, t, labels, tau, beta, gamma))
                # The teacher confident on the label, then on another class.
                right = logits(rng, rows, classes, 1.0)
                right[np.arange(rows), labels] += 6.0
                out.append(case(dist_class, f"teacher_right_{base}", logits(rng, rows, classes, 2.0), right, labels, tau, beta, gamma))
                wrong = logits(rng, rows, classes, 1.0)
                wrong[np.arange(rows), (labels + 1) % classes] += 6.0
                out.append(case(dist_class, f"teacher_wrong_{base}", logits(rng, rows, classes, 2.0), wrong, labels, tau, beta, gamma))
                # Many equal teacher logits; logits several times larger.
                ties = np.round(np.where(rng.random((rows, classes)) < 0.7, 1.0, logits(rng, rows, classes, 2.0)), 4)
                out.append(case(dist_class, f"ties_{base}", logits(rng, rows, classes, 2.0), ties, labels, tau, beta, gamma))
                out.append(case(dist_class, f"large_{base}", logits(rng, rows, classes, 12.0), logits(rng, rows, classes, 12.0), labels, tau, beta, gamma))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", required=True, help="checkout of hunto/image_classification_sota")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "golden"))
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    document = {
        "format": "kd-golden-v1",
        "method": "dist",
        "reference": {"repository": "https://github.com/hunto/image_classification_sota", "commit": COMMIT,
                      "code": "lib/models/losses/dist_kd.py: DIST(beta, gamma, tau).forward"},
        "cases": cases(load_dist(args.repo)),
    }
    path = os.path.join(args.out, "dist.json")
    with open(path, "w") as f:
        json.dump(document, f)
        f.write("\n")
    print(f"{path}: {len(document['cases'])} cases")


if __name__ == "__main__":
    main()
