"""Writes the golden cases of PS-KD, DLB and DGKD (tests/golden/pskd.json, dlb.json, dgkd.json)
from the authors' own published training code, run in float64 on the CPU.

    python3 xtask/pytorch/make_golden_selfkd.py \
        --pskd-repo DIR --dlb-repo DIR --dgkd-repo DIR [--takd-repo DIR] [--out tests/golden]

Each DIR is a checkout (or `git archive` export) of the authors' repository at the commit below;
keep it outside this repository: this program only imports or executes the authors' code from
there at run time, and only the numbers it computes are written here. For example:

    git clone https://github.com/lgcnsai/PS-KD-Pytorch /tmp/PS-KD-Pytorch
    git -C /tmp/PS-KD-Pytorch checkout 9aa0828d099f2faed16bbac258e4153902a55021
    (likewise /tmp/DLB, /tmp/DGKD and /tmp/TAKD at the commits below), then
    python3 xtask/pytorch/make_golden_selfkd.py --pskd-repo /tmp/PS-KD-Pytorch \
        --dlb-repo /tmp/DLB --dgkd-repo /tmp/DGKD --takd-repo /tmp/TAKD

Needs PyTorch (written against 2.9.0) and numpy; no GPU, no torchvision.

References (the code that computes every number of a case):

* PS-KD -- github.com/lgcnsai/PS-KD-Pytorch @ 9aa0828d099f2faed16bbac258e4153902a55021
  - `loss/pskd_loss.py`: the class `Custom_CrossEntropy_PSKD` (the loss), imported as is.
  - `main.py`: the function `train` (lines 387-488: the one-hot table of epoch 0, the soft
    targets `(1 - alpha_t) * onehot + alpha_t * all_predictions[idx]`, the loss, the backward
    pass and the update `all_predictions[idx] = softmax(outputs)`) and `get_learning_rate`
    (lines 115-119), both executed from the file's own source (its definitions are taken out
    with `ast`, so none of the module's other imports are needed). `alpha_t` is computed as
    `main_worker` computes it, lines 323-324 of `main.py`, the only inline line mirrored here
    (`alpha_t = args.alpha_T * ((epoch + 1) / args.end_epoch); alpha_t = max(0, alpha_t)`).
* DLB -- github.com/Meta-knowledge-Lab/DLB @ 8949a4621072cbd9d0d9d78bf8d9fba0f1814ed0
  - `dlb.py`: the function `train_one_epoch` (lines 64-113; the loss is lines 76-95:
    `CE(cat(out_pre, out), cat(pre_label, label)) + alpha * T^2 *
    kl_div(log_softmax(out_pre / T), softmax(pre_out.detach() / T), 'batchmean')`), executed
    from the file's own source (taken out with `ast`: the module parses the command line and
    makes folders at import), with `AverageMeter` and `accuracy` imported from `utils.py`.
* DGKD -- github.com/wonchulSon/DGKD @ 2599350ebe8cce045efd322a9f7fbf92f12528d7
  - `train.py`: the class `TrainManager` (lines 60-187; the loss is lines 102-127: `(1 - lambda)
    * CE + lambda * T * T * sum(nn.KLDivLoss()(log_softmax(z_s / T), softmax(z_j / T)))` over
    the teacher and the assistants left after `drop_num` calls of `random.choice`), the module
    imported as is and its `train()` run for one step.
* TAKD (optional cross-check) -- github.com/imirzadeh/Teacher-Assistant-Knowledge-Distillation
  @ 0f8168f4e7223134361cdd411eba0ab3b1123e29, `train.py`, `TrainManager` (loss lines 87-97):
  with `--takd-repo`, every DGKD case with a single teacher is also run through it and must
  agree to 1e-12.

Stand-ins (they never touch a loss or a gradient): the networks are modules that return the
case's logits (the student's as a fresh leaf tensor, whose `.grad` after the authors'
`loss.backward()` is the case's gradient); data loaders are one-batch lists; the optimizer is
SGD with learning rate 0 over a dummy parameter; the dataset / model-factory / nni modules the
authors' files import are empty modules; PS-KD's progress bar, its top-1/top-5 accuracy (top-5
does not exist for fewer than 5 classes) and `Tensor.cuda` (the run is on the CPU) are
replaced by no-ops; DGKD's `random.choice` is replaced by a chooser that removes the terms the
case names, so that the kept teachers are fixed and recorded. The loss value is read from the
tensor the authors' code calls `.backward()` on. `torch.set_default_dtype(torch.float64)` and
float64 inputs make every computation float64 (PS-KD's `torch.eye` included).

Inputs are rounded to 4 decimals (short in JSON); outputs are written with full precision.
The same program gives the same files (fixed seeds, no dependence on time or machine).
"""

import argparse
import ast
import contextlib
import importlib.util
import io
import json
import os
import sys
import types

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

FORMAT = "kd-golden-v1"
SOURCES = {
    "pskd": {
        "repository": "https://github.com/lgcnsai/PS-KD-Pytorch",
        "commit": "9aa0828d099f2faed16bbac258e4153902a55021",
        "code": "loss/pskd_loss.py (Custom_CrossEntropy_PSKD); main.py (train, lines 387-488; alpha_t, lines 323-324)",
    },
    "dlb": {
        "repository": "https://github.com/Meta-knowledge-Lab/DLB",
        "commit": "8949a4621072cbd9d0d9d78bf8d9fba0f1814ed0",
        "code": "dlb.py (train_one_epoch, lines 64-113)",
    },
    "dgkd": {
        "repository": "https://github.com/wonchulSon/DGKD",
        "commit": "2599350ebe8cce045efd322a9f7fbf92f12528d7",
        "code": "train.py (TrainManager.train, lines 84-141; loss lines 102-127)",
    },
}
TAKD_SOURCE = {
    "repository": "https://github.com/imirzadeh/Teacher-Assistant-Knowledge-Distillation",
    "commit": "0f8168f4e7223134361cdd411eba0ab3b1123e29",
    "code": "train.py (TrainManager.train, loss lines 87-97)",
}


# --------------------------------------------------------------------------------------------
# Loading the authors' code
# --------------------------------------------------------------------------------------------


def exec_definitions(path, names, namespace):
    """Executes the top-level definitions `names` of the file `path` (their source as written,
    with the file's line numbers) in `namespace`; nothing else of the file runs."""
    with open(path) as f:
        tree = ast.parse(f.read(), filename=path)
    nodes = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name in names]
    missing = set(names) - {n.name for n in nodes}
    if missing:
        raise SystemExit(f"{path}: no definition of {sorted(missing)}")
    exec(compile(ast.Module(body=nodes, type_ignores=[]), path, "exec"), namespace)
    return namespace


def import_file(module_name, path, stubs=()):
    """Imports `path` as `module_name`, with empty modules standing in for `stubs`."""
    saved = {name: sys.modules.get(name) for name in stubs}
    for name in stubs:
        stub = types.ModuleType(name)
        # The names the authors' files import from their data / model modules (never called).
        for attr in ("get_cifar", "create_cnn_model", "is_resnet"):
            setattr(stub, attr, None)
        sys.modules[name] = stub
    try:
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, os.path.dirname(path))
        try:
            spec.loader.exec_module(module)
        finally:
            sys.path.pop(0)
        return module
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old


@contextlib.contextmanager
def capture_backward():
    """Records (detached) every tensor `.backward()` is called on."""
    seen = []
    original = torch.Tensor.backward

    def backward(self, *args, **kwargs):
        seen.append(self.detach().clone())
        return original(self, *args, **kwargs)

    torch.Tensor.backward = backward
    try:
        yield seen
    finally:
        torch.Tensor.backward = original


@contextlib.contextmanager
def cuda_is_a_no_op():
    """`Tensor.cuda` returns the tensor itself (PS-KD's `train` moves its targets to the GPU
    unconditionally; this run is on the CPU)."""
    original = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.cuda = original


class LogitsNet(nn.Module):
    """Stand-in network. `fixed=None`: returns its input (the case's logits) as a fresh leaf
    tensor; else returns `fixed` whatever the input. In training mode, every output is kept in
    `outputs` so that its `.grad` can be read after the backward pass."""

    def __init__(self, fixed=None, leaf=True):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1, dtype=torch.float64))
        self.fixed = fixed
        self.leaf = leaf
        self.outputs = []

    def forward(self, x):
        out = (x if self.fixed is None else self.fixed).detach().clone()
        if self.leaf:
            out.requires_grad_(True)
        if self.training:
            self.outputs.append(out)
        return out


def sgd_stand_in(model):
    return torch.optim.SGD(model.parameters(), lr=0.0)


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def rounded(a):
    """Rounds to 4 decimals: the JSON inputs stay short, and the reference sees exactly them."""
    return np.round(np.asarray(a, dtype=np.float64), 4)


def softmax_np(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def labels_for(rng, b, c):
    return rng.randint(0, c, size=b)


def logits_kind(rng, kind, b, c, labels):
    """Student-side logits for a case kind: `random` (N(0, 2)), `large` (N(0, 25)), `confident`
    (random plus 6 on the label), `near_tie` (all within 0.01)."""
    if kind == "large":
        z = rng.randn(b, c) * 25.0
    elif kind == "near_tie":
        z = rng.randn(b, c) * 0.01
    else:
        z = rng.randn(b, c) * 2.0
    if kind == "confident":
        z[np.arange(b), labels] += 6.0
    return rounded(z)


def to_list(a):
    return np.asarray(a, dtype=np.float64).tolist()


def t64(a):
    return torch.tensor(np.asarray(a), dtype=torch.float64)


# --------------------------------------------------------------------------------------------
# PS-KD
# --------------------------------------------------------------------------------------------


def pskd_reference(repo):
    """The authors' `train` of main.py, bound to their loss class and helpers."""
    loss_module = import_file("pskd_loss_reference", os.path.join(repo, "loss", "pskd_loss.py"))
    meter_module = import_file("pskd_meter_reference", os.path.join(repo, "utils", "AverageMeter.py"))
    ns = {
        "torch": torch,
        "F": F,
        "nn": nn,
        "np": np,
        "logging": __import__("logging"),
        "dist": torch.distributed,
        "AverageMeter": meter_module.AverageMeter,
        # Stand-ins for display-only helpers (see the module docstring).
        "progress_bar": lambda *args, **kwargs: None,
        "accuracy": lambda output, target, topk=(1,): [torch.zeros(1) for _ in topk],
    }
    exec_definitions(os.path.join(repo, "main.py"), ["train", "get_learning_rate"], ns)
    return ns["train"], loss_module.Custom_CrossEntropy_PSKD


class OneBatchLoader(list):
    """A one-batch list of `(inputs, targets, input_indices)` with `dataset.classes`."""

    def __init__(self, batch, classes):
        super().__init__([batch])
        self.dataset = types.SimpleNamespace(classes=list(range(classes)))


def pskd_case(train_fn, loss_cls, name, rng, b, c, alpha_T, end_epoch, epoch, kind, n_samples=64):
    labels = labels_for(rng, b, c)
    student = logits_kind(rng, "large" if kind == "large" else "random", b, c, labels)
    indices = np.sort(rng.choice(n_samples, size=b, replace=False))
    # The table of past predictions (softmax outputs, as the authors' code stores them).
    past_logits = rng.randn(n_samples, c) * 2.0
    if kind == "past_right":
        past_logits[indices, labels] += 6.0
    elif kind == "past_wrong":
        wrong = (labels + 1 + rng.randint(0, c - 1, size=b)) % c
        past_logits[indices, wrong] += 6.0
    elif kind == "past_uniform":
        past_logits[indices] = 0.0
    table = softmax_np(rounded(past_logits))
    previous = table[indices].copy()

    # main.py lines 323-324 (main_worker).
    alpha_t = alpha_T * ((epoch + 1) / end_epoch)
    alpha_t = max(0, alpha_t)

    class Recording(loss_cls):
        """The authors' loss, recording the targets it is given."""

        def __init__(self):
            super().__init__()
            self.targets = []

        def forward(self, output, targets):
            self.targets.append(targets.detach().clone())
            return super().forward(output, targets)

    net = LogitsNet()
    criterion = Recording()
    all_predictions = t64(table)
    loader = OneBatchLoader((t64(student), torch.tensor(labels), torch.tensor(indices)), c)
    args = types.SimpleNamespace(PSKD=True, gpu=None, distributed=False, rank=0)
    with capture_backward() as losses, cuda_is_a_no_op(), contextlib.redirect_stdout(io.StringIO()):
        updated = train_fn(all_predictions, nn.CrossEntropyLoss(), criterion, sgd_stand_in(net), net, epoch, alpha_t, loader, args)
    assert len(losses) == 1 and len(net.outputs) == 1 and len(criterion.targets) == 1
    return {
        "name": name,
        "method": "pskd",
        "params": {"alpha_T": alpha_T, "epoch": epoch, "end_epoch": end_epoch},
        "student_logits": to_list(student),
        "labels": labels.tolist(),
        "indices": indices.tolist(),
        "previous_predictions": to_list(previous),
        "alpha_t": alpha_t,
        "soft_targets": to_list(criterion.targets[0].numpy()),
        "next_predictions": to_list(updated[torch.tensor(indices)].numpy()),
        "loss": losses[0].item(),
        "grad_student_logits": to_list(net.outputs[0].grad.numpy()),
    }


def pskd_cases(repo):
    train_fn, loss_cls = pskd_reference(repo)
    shapes = [(1, 10), (4, 10), (8, 10), (4, 2), (8, 2), (1, 2), (4, 100), (1, 100)]
    # (alpha_T, end_epoch, epoch): the authors' defaults (0.8, 300 epochs) at the first epoch
    # (one-hot targets), the second, the middle and the last; other schedules; the extremes.
    schedules = [(0.8, 300, 0), (0.8, 300, 1), (0.8, 300, 149), (0.8, 300, 299), (0.5, 200, 99), (1.0, 10, 9), (0.3, 4, 2), (0.0, 10, 5)]
    kinds = ["random", "past_right", "past_wrong", "past_uniform", "large"]
    cases = []
    seed = 3001
    for i, (alpha_T, end_epoch, epoch) in enumerate(schedules):
        for j in range(4 if i < 4 else 2):
            b, c = shapes[(i * 3 + j) % len(shapes)]
            kind = kinds[(i + j) % len(kinds)]
            rng = np.random.RandomState(seed)
            name = f"pskd-{kind}-b{b}-c{c}-aT{alpha_T}-e{epoch}of{end_epoch}-seed{seed}"
            cases.append(pskd_case(train_fn, loss_cls, name, rng, b, c, alpha_T, end_epoch, epoch, kind))
            seed += 1
    # One batch at the largest size, 100 classes, the defaults.
    rng = np.random.RandomState(seed)
    cases.append(pskd_case(train_fn, loss_cls, f"pskd-random-b8-c100-aT0.8-e200of300-seed{seed}", rng, 8, 100, 0.8, 300, 200, "random"))
    return cases


# --------------------------------------------------------------------------------------------
# DLB
# --------------------------------------------------------------------------------------------


def dlb_reference(repo):
    utils = import_file("dlb_utils_reference", os.path.join(repo, "utils.py"))
    ns = {"torch": torch, "F": F, "AverageMeter": utils.AverageMeter, "accuracy": utils.accuracy}
    exec_definitions(os.path.join(repo, "dlb.py"), ["train_one_epoch"], ns)
    return ns


def dlb_case(ns, name, rng, r, b, c, temperature, alpha, kind):
    """One step: `r` replayed samples (0: the very first step) and `b` fresh ones."""
    labels = labels_for(rng, r + b, c)
    fresh = logits_kind(rng, "large" if kind == "large" else "random", b, c, labels[r:])
    replayed = logits_kind(rng, "large" if kind == "large" else "random", r, c, labels[:r])
    previous = logits_kind(rng, "large" if kind == "large" else "random", r, c, labels[:r])
    if kind == "consistent":
        replayed = previous.copy()  # the consistency term is 0 and so is its gradient
    elif kind == "previous_confident":
        previous = rounded(previous + 6.0 * np.eye(c)[labels[:r]])
    ns["args"] = types.SimpleNamespace(T=temperature)
    # The loader's two views: [:, 0] is what this step's forward sees, [:, 1] what the next
    # step replays. The stand-in network returns its input, so the views hold the logits.
    imgs = np.stack([fresh, np.zeros_like(fresh)], axis=1)
    loader = [[t64(imgs), torch.tensor(labels[r:])]]
    if r > 0:
        pre_data = [t64(np.stack([previous, replayed], axis=1)), torch.tensor(labels[:r])]
        pre_out = t64(previous)
    else:
        pre_data, pre_out = None, None
    model = LogitsNet()
    with capture_backward() as losses:
        ns["train_one_epoch"](model, sgd_stand_in(model), loader, alpha, pre_data, pre_out)
    assert len(losses) == 1 and len(model.outputs) == (2 if r > 0 else 1)
    # Row order of the case: the replayed rows (out_pre), then the fresh ones (out).
    out = model.outputs[0]
    grads = [model.outputs[1].grad.numpy(), out.grad.numpy()] if r > 0 else [out.grad.numpy()]
    student = np.concatenate([replayed, fresh], axis=0)
    return {
        "name": name,
        "method": "dlb",
        "params": {"temperature": temperature, "alpha": alpha},
        "student_logits": to_list(student),
        "labels": labels.tolist(),
        "replayed": r,
        "previous_logits": to_list(previous.reshape(r, c)),
        "loss": losses[0].item(),
        "grad_student_logits": to_list(np.concatenate(grads, axis=0)),
    }


def dlb_cases(repo):
    ns = dlb_reference(repo)
    # (replayed, fresh, classes): equal batches, the last (smaller) batch of an epoch replaying
    # a full one and the other way round, and the first step (nothing replayed).
    shapes = [(4, 4, 10), (8, 8, 10), (1, 1, 10), (4, 4, 2), (8, 8, 2), (4, 4, 100), (8, 4, 10), (4, 1, 2), (1, 8, 10), (0, 4, 10), (0, 1, 2)]
    # (T, alpha): T = 3 (the default experiment name's "TP3") with alpha 1 and 0.5, other values.
    params = [(3.0, 1.0), (3.0, 0.5), (1.0, 1.0), (4.0, 2.0), (10.0, 0.1)]
    kinds = ["random", "previous_confident", "consistent", "large"]
    cases = []
    seed = 4001
    for i, (r, b, c) in enumerate(shapes):
        for j in range(3 if r > 0 else 1):
            temperature, alpha = params[(i + j) % len(params)]
            kind = kinds[(i * 3 + j) % len(kinds)] if r > 0 else "random"
            rng = np.random.RandomState(seed)
            name = f"dlb-{kind}-r{r}-b{b}-c{c}-T{temperature:g}-alpha{alpha:g}-seed{seed}"
            cases.append(dlb_case(ns, name, rng, r, b, c, temperature, alpha, kind))
            seed += 1
    return cases


# --------------------------------------------------------------------------------------------
# DGKD (and TAKD)
# --------------------------------------------------------------------------------------------


class DropChooser:
    """Stands in for the `random` module of DGKD's train.py: `choice` returns the terms of the
    original list named by `dropped` (indices: 0 the teacher, i the i-th assistant), in order."""

    def __init__(self, dropped):
        self.dropped = list(dropped)
        self.original = None

    def choice(self, terms):
        if self.original is None:
            self.original = list(terms)
        chosen = self.original[self.dropped.pop(0)]
        assert any(t is chosen for t in terms)
        return chosen


def stage_config(temperature, lam, drop_num, **extra):
    return dict(
        device="cpu",
        name="golden",
        learning_rate=0.0,
        momentum=0.0,
        weight_decay=0.0,
        lambda_student=lam,
        T_student=temperature,
        epochs=1,
        drop_num=drop_num,
        is_plane=True,
        **extra,
    )


def wrong_labels(student):
    """Validation labels the student gets wrong, so the authors' `train` saves no checkpoint."""
    return torch.tensor((student.argmax(axis=1) + 1) % student.shape[1])


def run_dgkd(module, student, teachers, labels, temperature, lam, dropped):
    net = LogitsNet(fixed=t64(student))
    nets = [LogitsNet(fixed=t64(t), leaf=False) for t in teachers]
    ta_list = nets[1:]
    module.ta_list = ta_list  # train.py reads the module's `ta_list` (line 109) ...
    module.args = types.SimpleNamespace(drop_num=len(dropped), gpus="0", dataset="cifar100")  # ... and `args` (122)
    module.random = DropChooser(dropped)
    data = torch.zeros(student.shape[0], 1)
    manager = module.TrainManager(
        net,
        teacher=nets[0],
        ta_list=ta_list,
        train_loader=[(data, torch.tensor(labels))],
        test_loader=[(data, wrong_labels(student))],
        train_config=stage_config(temperature, lam, len(dropped)),
    )
    with capture_backward() as losses, contextlib.redirect_stdout(io.StringIO()):
        manager.train()
    assert len(losses) == 1 and len(net.outputs) == 1 and not module.random.dropped
    return losses[0].item(), net.outputs[0].grad.numpy()


def run_takd(module, student, teacher, labels, temperature, lam):
    net = LogitsNet(fixed=t64(student))
    data = torch.zeros(student.shape[0], 1)
    manager = module.TrainManager(
        net,
        teacher=LogitsNet(fixed=t64(teacher), leaf=False),
        train_loader=[(data, torch.tensor(labels))],
        test_loader=[(data, wrong_labels(student))],
        train_config=stage_config(temperature, lam, 0, trial_id="golden"),
    )
    with capture_backward() as losses, contextlib.redirect_stdout(io.StringIO()):
        manager.train()
    assert len(losses) == 1 and len(net.outputs) == 1
    return losses[0].item(), net.outputs[0].grad.numpy()


def dgkd_case(module, takd, name, rng, b, c, n_teachers, temperature, lam, dropped, kind):
    labels = labels_for(rng, b, c)
    student = logits_kind(rng, "large" if kind == "large" else "random", b, c, labels)
    teachers = []
    for j in range(n_teachers):
        t = logits_kind(rng, "large" if kind == "large" else "confident" if kind == "teachers_right" else "random", b, c, labels)
        if kind == "teachers_wrong":
            t = rounded(t + 6.0 * np.eye(c)[(labels + 1 + j) % c])
        teachers.append(t)
    loss, grad = run_dgkd(module, student, teachers, labels, temperature, lam, dropped)
    if takd is not None and n_teachers == 1:
        takd_loss, takd_grad = run_takd(takd, student, teachers[0], labels, temperature, lam)
        assert abs(takd_loss - loss) <= 1e-12 * max(1.0, abs(loss)), (name, takd_loss, loss)
        assert np.allclose(takd_grad, grad, rtol=1e-12, atol=1e-15), name
    kept = [j for j in range(n_teachers) if j not in dropped]
    return {
        "name": name,
        "method": "dgkd",
        "params": {"temperature": float(temperature), "lambda": lam, "drop_num": len(dropped)},
        "student_logits": to_list(student),
        "teachers_logits": [to_list(t) for t in teachers],
        "kept": kept,
        "labels": labels.tolist(),
        "loss": loss,
        "grad_student_logits": to_list(grad),
    }


def dgkd_cases(repo, takd_repo):
    module = import_file("dgkd_train_reference", os.path.join(repo, "train.py"), stubs=["data_loader", "model_factory"])
    takd = None
    if takd_repo:
        takd = import_file("takd_train_reference", os.path.join(takd_repo, "train.py"), stubs=["data_loader", "model_factory", "nni"])
    # (B, C, teachers (the teacher and its assistants), dropped term indices): the defaults are
    # 3 assistants and drop_num 1; no assistant (a TAKD stage); no drop; two dropped.
    layouts = [
        (4, 10, 4, [2]),
        (8, 10, 4, [0]),
        (1, 10, 4, [3]),
        (4, 2, 4, [1]),
        (4, 100, 4, [2]),
        (8, 2, 3, []),
        (4, 10, 3, [1, 0]),
        (1, 2, 2, [1]),
        (8, 10, 2, []),
        (4, 10, 1, []),
        (1, 100, 3, [0]),
        (8, 10, 1, []),
    ]
    # (T, lambda): the authors' defaults T = 5 (an integer: argparse type=int), lambda = 1, then
    # mixes with the cross-entropy and other temperatures.
    params = [(5, 1.0), (5, 0.5), (2, 0.7), (4, 0.9), (1, 0.3), (10, 1.0), (5, 0.0)]
    kinds = ["random", "teachers_right", "teachers_wrong", "large"]
    cases = []
    seed = 5001
    for i, (b, c, n, dropped) in enumerate(layouts):
        for j in range(3 if i < 6 else 2):
            temperature, lam = params[(i * 2 + j) % len(params)]
            kind = kinds[(i + j) % len(kinds)]
            rng = np.random.RandomState(seed)
            name = f"dgkd-{kind}-b{b}-c{c}-n{n}-drop{''.join(map(str, dropped)) or 'none'}-T{temperature}-lambda{lam:g}-seed{seed}"
            cases.append(dgkd_case(module, takd, name, rng, b, c, n, temperature, lam, dropped, kind))
            seed += 1
    return cases


# --------------------------------------------------------------------------------------------


def write(out_dir, method, cases, extra_source=None):
    reference = dict(SOURCES[method])
    if extra_source:
        reference["cross_check"] = extra_source
    doc = {"format": FORMAT, "method": method, "reference": reference, "generator": "xtask/pytorch/make_golden_selfkd.py", "cases": cases}
    path = os.path.join(out_dir, f"{method}.json")
    with open(path, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"{path}: {len(cases)} cases, {os.path.getsize(path)} bytes")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pskd-repo", required=True, help="checkout of lgcnsai/PS-KD-Pytorch")
    parser.add_argument("--dlb-repo", required=True, help="checkout of Meta-knowledge-Lab/DLB")
    parser.add_argument("--dgkd-repo", required=True, help="checkout of wonchulSon/DGKD")
    parser.add_argument("--takd-repo", help="checkout of imirzadeh/Teacher-Assistant-Knowledge-Distillation (cross-check)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "golden"))
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    out = os.path.normpath(args.out)
    write(out, "pskd", pskd_cases(os.path.abspath(args.pskd_repo)))
    write(out, "dlb", dlb_cases(os.path.abspath(args.dlb_repo)))
    write(out, "dgkd", dgkd_cases(os.path.abspath(args.dgkd_repo), args.takd_repo and os.path.abspath(args.takd_repo)), TAKD_SOURCE if args.takd_repo else None)


if __name__ == "__main__":
    main()
