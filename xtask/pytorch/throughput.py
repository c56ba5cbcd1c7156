"""PyTorch reference for `cargo xtask throughput --vs-pytorch`: the same training step as the
Rust benchmark, timed the same way, printed as one JSON object.

One step: the teacher's forward pass in eval mode without gradients (KD only), the student's
forward and backward pass in train mode, one SGD step (lr 0.01, momentum 0.9, weight decay
5e-4). KD's loss is 0.1 * cross-entropy + 0.9 * T^2 * KL(teacher || student) at T = 4, the
project's (and mdistiller's) defaults. The batches are drawn in a shuffled order from a
synthetic uniform [-1, 1) dataset of `batch * steps` samples held in memory, as the Rust side
does. One untimed epoch of `steps` steps warms up (allocations, kernel choice); the next epoch
is timed. Each step reads the loss and the number of correct predictions back to the host,
as the Rust trainer does.

With `--phases`, the device is synchronised between the phases of each timed step and their
mean seconds are printed under the Rust trainer's names (assemble, teacher, forward, loss,
read_back, backward, optimizer), with the number of ATen kernels (leaf operators, the ones that
do the work) one more step runs under the profiler.
"""

import argparse
import json
import time

import torch
import torch.nn.functional as F

import kd_models


def kd_loss(student, teacher, labels, temperature=4.0, ce_weight=0.1, kd_weight=0.9):
    ce = F.cross_entropy(student, labels)
    log_p = F.log_softmax(student / temperature, dim=1)
    q = F.softmax(teacher / temperature, dim=1)
    kl = F.kl_div(log_p, q, reduction="none").sum(1).mean() * temperature**2
    return ce_weight * ce + kd_weight * kl


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--student", required=True)
    parser.add_argument("--shape", required=True, help="CxHxW")
    parser.add_argument("--classes", type=int, required=True)
    parser.add_argument("--method", choices=["ce", "kd"], required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--phases", action="store_true", help="time each phase of a step and count its kernels")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    shape = tuple(int(x) for x in args.shape.split("x"))
    n = args.batch * args.steps
    data = (torch.rand((n,) + shape) * 2 - 1).to(device)
    labels = (torch.arange(n) % args.classes).to(device)
    student = kd_models.build(args.student, shape, args.classes).to(device).train()
    teacher = kd_models.build(args.teacher, shape, args.classes).to(device).eval() if args.method == "kd" else None
    optim = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    phases = {name: 0.0 for name in ("assemble", "teacher", "forward", "loss", "read_back", "backward", "optimizer")}
    lap = {"at": 0.0}

    def mark(name):
        """Ends phase `name` here (only with --phases)."""
        if args.phases:
            sync()
            now = time.perf_counter()
            phases[name] += now - lap["at"]
            lap["at"] = now

    def step(order, s):
        idx = order[s * args.batch:(s + 1) * args.batch]
        x, y = data[idx], labels[idx]
        mark("assemble")
        t = None
        if teacher is not None:
            with torch.no_grad():
                t = teacher(x)
        mark("teacher")
        logits = student(x)
        mark("forward")
        loss = F.cross_entropy(logits, y) if t is None else kd_loss(logits, t, y)
        hits = (logits.detach().argmax(1) == y).sum().float()
        mark("loss")
        # Like the Rust trainer: the loss and the count of correct predictions come to the
        # host every step, in one transfer.
        torch.stack([loss.detach(), hits]).tolist()
        mark("read_back")
        optim.zero_grad(set_to_none=True)
        loss.backward()
        mark("backward")
        optim.step()
        mark("optimizer")

    def epoch(seed):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(device)
        lap["at"] = time.perf_counter()
        for s in range(args.steps):
            step(order, s)

    epoch(0)
    for name in phases:
        phases[name] = 0.0
    sync()
    start = time.perf_counter()
    epoch(1)
    sync()
    seconds = (time.perf_counter() - start) / args.steps
    result = {
        "images_per_second": args.batch / seconds,
        "seconds_per_step": seconds,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }
    if args.phases:
        result["phases"] = {name: total / args.steps for name, total in phases.items()}
        result["kernels_per_step"] = count_kernels(lambda: step(torch.arange(n, device=device), 0))
    print(json.dumps(result))


def count_kernels(run_step):
    """ATen operators one step runs that call no other ATen operator: the kernels."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run_step()
    events = [e for e in prof.events() if e.name.startswith("aten::")]
    parents = {id(e.cpu_parent) for e in events if e.cpu_parent is not None}
    return sum(1 for e in events if id(e) not in parents)


if __name__ == "__main__":
    main()
