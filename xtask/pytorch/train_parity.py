"""Trains the bench's default cells in PyTorch, to check that this project trains as PyTorch does.

The data come from `cargo xtask bench --export-data DIR` (the exact splits the bench trains on:
the teacher's training split, the students' subset, validation and test, normalised, with
`plan.json` holding the recipes and model names), so the split, the preprocessing and the
evaluation sets are the same by construction. The rest is written to match the Rust trainer
(`crates/kd-core/src/train.rs`, `optim.rs`) and the bench:

- models: `kd_models.py` (the zoo's PyTorch definitions; Linear layers keep PyTorch's default
  initialisation, which is the distribution Burn's `LinearConfig` default draws: weights and
  biases uniform in +-1/sqrt(fan_in); BatchNorm weight 1, bias 0, momentum 0.1, eps 1e-5);
- recipe: SGD (momentum, no Nesterov, coupled weight decay on every parameter), the learning
  rate set per epoch by the cosine schedule `min + (base - min) (1 + cos(pi (e-1) / E)) / 2`,
  a fresh shuffle every epoch, the last short batch kept;
- teacher: trained with cross-entropy on the teacher's split, its last epoch's weights distil
  (as the bench does), in eval mode;
- KD: `ce_weight * CE + kd_weight * T^2 * KL(softmax(t/T) || softmax(s/T))`, batch mean
  (mdistiller's `kd_loss`; the weights and T are read from plan.json);
- evaluation after every epoch on validation and test; "selected" is the test accuracy at the
  first epoch of highest validation accuracy, "best" the highest test accuracy, "last" the
  last epoch's.

Usage:

    cargo xtask bench --datasets fashion-mnist --export-data target/parity-data
    cargo xtask bench --datasets fashion-mnist --methods ce,kd --out target/parity-rust
    python3 xtask/pytorch/train_parity.py --data target/parity-data/fashion-mnist \\
        --rust target/parity-rust/results.json --seeds 0,1,2 --threads 2

It prints one table (mean +- std over the seeds, Rust beside PyTorch) and writes the PyTorch
records as JSON with `--out`.

The CIFAR-10 suite (`cargo xtask bench --suites cifar10 --datasets images:DIR --export-data
DIR2`) exports no teacher split but the suite's trained teacher (`teacher.safetensors`, PyTorch's
layout), which is loaded here instead of trained, and its recipes (mdistiller's multi-step
decay) and augmentation (`plan.json`'s `augment`: CIFAR's pad-4 crop, zero-padded in pixel
space, and horizontal flip, drawn per sample and epoch by `torch.Generator`; the draws differ
from Rust's, their distribution does not):

    cargo xtask bench --suites cifar10 --datasets images:target/cifar10-jpg --backend tch \
        --export-data target/parity-cifar10
    python3 xtask/pytorch/train_parity.py --data target/parity-cifar10/images_cifar10-jpg \
        --rust target/kd-bench/results.json --seeds 0,1,2 --threads 2

Each record also has `train_seconds_per_epoch` (training steps only, as the Rust records'
`seconds_per_epoch`), PyTorch eager with the live teacher: mdistiller's way. Given `--rust` more
than once (the same cells on other backends, or with `--teacher-cache`), it also prints the
epoch-time table: PyTorch's seconds beside each file's, and their ratio:

    python3 xtask/pytorch/train_parity.py --data target/parity-cifar10/images_cifar10-jpg \
        --rust target/bench-tch-cache/results.json --rust target/bench-tch-live/results.json \
        --rust target/bench-flex/results.json --seeds 0,1,2 --threads 2
"""

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import kd_models


def load_split(data, name):
    x = torch.from_numpy(np.load(data / f"{name}_x.npy"))
    y = torch.from_numpy(np.load(data / f"{name}_y.npy")).long()
    return x, y


def lr_at(recipe, epoch):
    base = recipe["optimizer"]["lr"]
    schedule = recipe["schedule"]
    total = recipe["epochs"]
    if schedule["kind"] == "cosine":
        low = schedule["min_lr"]
        lr = low + 0.5 * (base - low) * (1 + math.cos(math.pi * (epoch - 1) / total))
    elif schedule["kind"] == "constant":
        lr = base
    elif schedule["kind"] == "multi_step":
        # lr * gamma^#{m : m < epoch}, epochs counted from 1 (mdistiller's adjust_learning_rate).
        lr = base * schedule["gamma"] ** sum(1 for m in schedule["milestones"] if m < epoch)
    else:
        sys.exit(f"schedule {schedule['kind']} is not mirrored here")
    warm = recipe.get("lr_warmup_epochs", 0)
    return lr * epoch / warm if warm and epoch <= warm else lr


@torch.no_grad()
def accuracy(model, x, y, batch):
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        correct += (model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum().item()
    return 100.0 * correct / len(x)


class Augment:
    """CIFAR's training augmentation on normalised NCHW batches: zero-pad the raw image by
    `crop_padding` pixels (the value `(0 - mean) / std` once normalised) and crop back at a
    random offset, then flip horizontally with probability 1/2; per sample, from `gen`."""

    def __init__(self, plan, gen):
        aug = plan.get("augment") or {}
        self.pad = aug.get("crop_padding", 0)
        self.flip = aug.get("hflip", False)
        if aug.get("random_resized_crop"):
            sys.exit("random_resized_crop is not mirrored here")
        mean, std = plan.get("mean"), plan.get("std")
        self.fill = None if mean is None else (-torch.tensor(mean) / torch.tensor(std)).view(1, -1, 1, 1)
        self.gen = gen

    def active(self):
        return self.pad > 0 or self.flip

    def __call__(self, x):
        n, c, h, w = x.shape
        if self.pad > 0:
            p = self.pad
            padded = self.fill.to(x.dtype).expand(n, c, h + 2 * p, w + 2 * p).clone()
            padded[:, :, p : p + h, p : p + w] = x
            dy = torch.randint(0, 2 * p + 1, (n,), generator=self.gen)
            dx = torch.randint(0, 2 * p + 1, (n,), generator=self.gen)
            rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).view(n, 1, h, 1).expand(n, c, h, w + 2 * p)
            x = padded.gather(2, rows)
            cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).view(n, 1, 1, w).expand(n, c, h, w)
            x = x.gather(3, cols)
        if self.flip:
            flip = torch.rand(n, generator=self.gen) < 0.5
            x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
        return x


def train(model, recipe, train_xy, valid_xy, test_xy, loss_fn, seed, augment=None):
    opt = recipe["optimizer"]
    if opt["kind"] != "sgd":
        sys.exit(f"optimizer {opt['kind']} is not mirrored here")
    optim = torch.optim.SGD(
        model.parameters(), lr=opt["lr"], momentum=opt["momentum"], nesterov=opt["nesterov"], weight_decay=opt["weight_decay"]
    )
    x, y = train_xy
    gen = torch.Generator().manual_seed(seed)
    batch = recipe["batch_size"]
    curve = []
    train_seconds = 0.0
    started = time.perf_counter()
    for epoch in range(1, recipe["epochs"] + 1):
        for group in optim.param_groups:
            group["lr"] = lr_at(recipe, epoch)
        model.train()
        epoch_started = time.perf_counter()
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch):
            idx = order[i : i + batch]
            if recipe.get("drop_last") and len(idx) < batch:
                break
            inputs = augment(x[idx]) if augment is not None and augment.active() else x[idx]
            optim.zero_grad(set_to_none=True)
            loss = loss_fn(model, inputs, y[idx])
            loss.backward()
            optim.step()
        train_seconds += time.perf_counter() - epoch_started
        valid = accuracy(model, *valid_xy, recipe["eval_batch_size"])
        test = accuracy(model, *test_xy, recipe["eval_batch_size"])
        curve.append((valid, test))
    seconds = time.perf_counter() - started
    best_valid = max(v for v, _ in curve)
    selected = next(t for v, t in curve if v == best_valid)
    return {
        "selected_acc": selected,
        "best_acc": max(t for _, t in curve),
        "last_acc": curve[-1][1],
        "valid_acc": best_valid,
        "seconds_per_epoch": seconds / len(curve),
        "train_seconds_per_epoch": train_seconds / len(curve),
        "curve": [t for _, t in curve],
    }


def ce_loss(model, x, y):
    return F.cross_entropy(model(x), y)


def kd_loss_fn(teacher, cfg):
    t_, ce_w, kd_w = cfg["temperature"], cfg["ce_weight"], cfg["kd_weight"]

    def loss(model, x, y):
        with torch.no_grad():
            t_logits = teacher(x)
        s_logits = model(x)
        kl = F.kl_div(F.log_softmax(s_logits / t_, dim=1), F.softmax(t_logits / t_, dim=1), reduction="batchmean")
        return ce_w * F.cross_entropy(s_logits, y) + kd_w * t_**2 * kl

    return loss


def mean_std(values):
    return (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0)


def cell(values):
    m, s = mean_std(values)
    return f"{m:.2f} ± {s:.2f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, type=Path, help="one dataset folder written by --export-data")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default="ce,kd")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--rust",
        type=Path,
        action="append",
        default=[],
        help="the bench's results.json of the same cells, for the side-by-side table (the first file); "
        "given more than once (other backends, with and without --teacher-cache), an epoch-time table of every file",
    )
    parser.add_argument("--out", type=Path, help="write the PyTorch records here (JSON)")
    parser.add_argument("--student-epochs", type=int, help="train the students this many epochs (default: the plan's; for timing)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    plan = json.loads((args.data / "plan.json").read_text())
    if args.student_epochs is not None:
        # The schedule's shape is the plan's own: a shortened run only times epochs.
        plan["student_recipe"]["epochs"] = args.student_epochs
    shape, classes = tuple(plan["input_shape"]), plan["classes"]
    teacher_file = args.data / "teacher.safetensors"
    teacher_xy = None if teacher_file.exists() else load_split(args.data, "teacher_train")
    student_xy = load_split(args.data, "student_train")
    valid_xy, test_xy = load_split(args.data, "valid"), load_split(args.data, "test")
    methods = args.methods.split(",")
    for m in methods:
        if m not in ("ce", "kd"):
            sys.exit(f"method {m} is not mirrored here (ce, kd)")
    records = []
    loaded = None
    if teacher_xy is None:
        # The suite's one teacher, as the Rust side distils from it (eval mode).
        from safetensors.torch import load_file

        loaded = kd_models.build(plan["teacher"], shape, classes)
        loaded.load_state_dict(load_file(teacher_file), strict=True)
        loaded.eval()
        test = accuracy(loaded, *test_xy, plan["teacher_recipe"]["eval_batch_size"])
        print(f"teacher loaded from {teacher_file}: test {test:.2f} %", file=sys.stderr, flush=True)
    for seed in [int(s) for s in args.seeds.split(",")]:
        torch.manual_seed(seed)
        if loaded is None:
            teacher = kd_models.build(plan["teacher"], shape, classes)
            r = train(teacher, plan["teacher_recipe"], teacher_xy, valid_xy, test_xy, ce_loss, seed)
            records.append({"method": "teacher", "model": plan["teacher"], "seed": seed, **r})
            print(f"teacher seed {seed}: selected {r['selected_acc']:.2f} %", file=sys.stderr, flush=True)
            teacher.eval()
        else:
            teacher = loaded
        for m in methods:
            torch.manual_seed(seed)
            student = kd_models.build(plan["student"], shape, classes)
            loss = ce_loss if m == "ce" else kd_loss_fn(teacher, plan["kd"])
            augment = Augment(plan, torch.Generator().manual_seed(seed + 1_000_003))
            r = train(student, plan["student_recipe"], student_xy, valid_xy, test_xy, loss, seed, augment)
            records.append({"method": m, "model": plan["student"], "seed": seed, **r})
            print(f"{m} seed {seed}: selected {r['selected_acc']:.2f} %", file=sys.stderr, flush=True)
    if args.out:
        args.out.write_text(json.dumps(records, indent=1))

    runs = [[r for r in json.loads(f.read_text()) if r.get("error") is None and r["dataset"] == plan["dataset"]] for f in args.rust]
    rust = runs[0] if runs else []
    backends = sorted({r["backend"] for r in rust}) or ["-"]
    print(f"### {plan['dataset']}: this project ({', '.join(backends)}) beside PyTorch {torch.__version__}, mean ± std over seeds {args.seeds}\n")
    print("| method | model | Rust selected | PyTorch selected | Rust best | PyTorch best | Rust last | PyTorch last | Rust s/epoch | PyTorch s/epoch |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for m in (["teacher"] if loaded is None else []) + methods:
        ours = [r for r in records if r["method"] == m]
        theirs = [r for r in rust if r["method"] == m]
        row = [m, ours[0]["model"]]
        for key in ("selected_acc", "best_acc", "last_acc"):
            row.append(cell([r[key] for r in theirs]) if theirs else "-")
            row.append(cell([r[key] for r in ours]))
        row.append(f"{statistics.mean(r['seconds_per_epoch'] for r in theirs):.2f}" if theirs else "-")
        row.append(f"{statistics.mean(r['train_seconds_per_epoch'] for r in ours):.2f}")
        print("| " + " | ".join(row) + " |")
    if len(runs) > 1:
        epoch_times(records, runs, methods)


def variant(records):
    """How a results file trained: its backend, and whether the teacher ran live or from the cache
    (the file's CE rows, which read no teacher, say neither)."""
    backends = ", ".join(sorted({r["backend"] for r in records})) or "-"
    cached = any(r.get("teacher_cache") for r in records)
    return f"{backends}, {'teacher cache' if cached else 'live teacher'}"


def epoch_times(records, runs, methods):
    """Seconds of training per epoch (evaluation left out on both sides), PyTorch eager with a live
    teacher beside each results file, and PyTorch's time over that file's (above 1: faster)."""
    print("\n### Training seconds per epoch, mean over seeds (speed: PyTorch's seconds / these)\n")
    heads = [f"PyTorch {torch.__version__}, eager, live teacher"] + [variant(r) for r in runs]
    print("| method | " + " | ".join(heads) + " |")
    print("|---|" + "---|" * len(heads))
    for m in methods:
        ours = statistics.mean(r["train_seconds_per_epoch"] for r in records if r["method"] == m)
        row = [m, f"{ours:.2f}"]
        for rust in runs:
            theirs = [r["seconds_per_epoch"] for r in rust if r["method"] == m]
            row.append(f"{statistics.mean(theirs):.2f} ({ours / statistics.mean(theirs):.2f}x)" if theirs else "-")
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
