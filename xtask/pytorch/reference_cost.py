"""The reference code's own cost of each distillation method, as a ratio to its KD step: the bar
`cargo xtask throughput --methods ...` is read against (docs/methods.md, "Cost").

    python3 xtask/pytorch/reference_cost.py --mdistiller DIR [--repdistiller DIR]
        [--methods kd,at,...] [--teacher resnet32x4 --student resnet8x4 --classes 100]
        [--batch 64] [--steps 3] [--rounds 3] [--threads 2]

DIR is a checkout of megvii-research/mdistiller (measured at a08d46f), kept outside this
repository; its models (`cifar_model_dict`) and distillers (`distiller_dict`, built with the
defaults of its `engine/cfg.py`) are imported from there as they are. CC is not in mdistiller:
with `--repdistiller DIR2` (HobbitLong/RepDistiller, b84f547) its `Correlation` loss on
`LinearEmbed` heads of the pooled features, as its `train_student.py` builds them, is timed on
the same models, with CE (loss `CE + 0.02 * CC`, the weight of RepDistiller's CC script).

One step is what mdistiller's trainer does per batch: `distiller.forward_train` (the teacher's
forward without gradients included), the sum of the returned losses, `backward`, one SGD step
(lr 0.05, momentum 0.9, weight decay 5e-4) on `get_learnable_parameters()`. Inputs are uniform
random images, the same for every method. One untimed step warms up; each round times `steps`
steps; the best round counts. Prints one JSON object: milliseconds per step and the ratio to
KD's, per method.

Needs PyTorch (written against 2.9.0) and what mdistiller imports (yacs, scipy, tqdm,
tensorboardX).
"""

import argparse
import importlib
import json
import sys
import time

import torch
import torch.nn.functional as F


def mdistiller_step(args, name, student, teacher, cfg, num_data):
    from mdistiller.distillers import distiller_dict

    key = name.upper()
    if key == "CRD":
        # The memory moves its sampler to CUDA when built; the step passes its own negatives
        # (`contrastive_index`), so on a CPU the sampler stays where it is.
        crd_module = importlib.import_module("mdistiller.distillers.CRD")
        crd_module.AliasMethod.cuda = lambda self: self
    if key == "CRD":
        distiller = distiller_dict[key](student, teacher, cfg, num_data)
    else:
        distiller = distiller_dict[key](student, teacher, cfg)
    distiller.train()
    optim = torch.optim.SGD(distiller.get_learnable_parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    k = cfg.CRD.NCE.K

    def step(images, labels, index):
        extra = {}
        if key == "CRD":
            negatives = torch.randint(0, num_data, (images.shape[0], k + 1))
            negatives[:, 0] = index
            extra = {"index": index, "contrastive_index": negatives}
        _, losses = distiller.forward_train(image=images, target=labels, epoch=cfg.SOLVER.EPOCHS, **extra)
        loss = sum(v.mean() for v in losses.values())
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()

    return step


def cc_step(args, student, teacher):
    sys.path.insert(0, args.repdistiller)
    from distiller_zoo import Correlation
    from models.util import LinearEmbed

    probe = torch.zeros(2, 3, 32, 32)
    dim_s = student(probe)[1]["pooled_feat"].shape[1]
    dim_t = teacher(probe)[1]["pooled_feat"].shape[1]
    embed_s, embed_t, criterion = LinearEmbed(dim_s, 128), LinearEmbed(dim_t, 128), Correlation()
    params = list(student.parameters()) + list(embed_s.parameters()) + list(embed_t.parameters())
    optim = torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)
    student.train()
    teacher.eval()

    def step(images, labels, index):
        logits, feats = student(images)
        with torch.no_grad():
            _, feats_t = teacher(images)
        loss = F.cross_entropy(logits, labels) + 0.02 * criterion(embed_s(feats["pooled_feat"]), embed_t(feats_t["pooled_feat"]))
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()

    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mdistiller", required=True)
    parser.add_argument("--repdistiller")
    parser.add_argument("--methods", default="kd,at,nst,sp,pkt,kdsvd,vid,ofd,crd,reviewkd,rkd,fitnet,dkd,cc")
    parser.add_argument("--teacher", default="resnet32x4")
    parser.add_argument("--student", default="resnet8x4")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--num-data", type=int, default=50000, help="CRD's memory bank rows (CIFAR's training split)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    sys.path.insert(0, args.mdistiller)
    from mdistiller.engine.cfg import CFG
    from mdistiller.models import cifar_model_dict

    torch.set_num_threads(args.threads)
    methods = args.methods.split(",")
    if "kd" not in methods:
        methods.insert(0, "kd")
    images = torch.rand(args.batch, 3, 32, 32) * 2 - 1
    labels = torch.arange(args.batch) % args.classes
    index = torch.randperm(args.num_data)[: args.batch]
    results = {}
    for name in methods:
        torch.manual_seed(0)
        student = cifar_model_dict[args.student][0](num_classes=args.classes)
        teacher = cifar_model_dict[args.teacher][0](num_classes=args.classes)
        cfg = CFG.clone()
        if name == "cc":
            if not args.repdistiller:
                print("cc needs --repdistiller; skipped", file=sys.stderr)
                continue
            step = cc_step(args, student, teacher)
        else:
            step = mdistiller_step(args, name, student, teacher, cfg, args.num_data)
        step(images, labels, index)
        best = float("inf")
        for _ in range(args.rounds):
            start = time.perf_counter()
            for _ in range(args.steps):
                step(images, labels, index)
            best = min(best, (time.perf_counter() - start) / args.steps)
        results[name] = {"ms_per_step": best * 1e3}
        print(f"{name}: {best * 1e3:.1f} ms/step", file=sys.stderr)
    kd = results["kd"]["ms_per_step"]
    for r in results.values():
        r["ratio_to_kd"] = r["ms_per_step"] / kd
    print(json.dumps({"teacher": args.teacher, "student": args.student, "batch": args.batch, "threads": args.threads,
                      "torch": torch.__version__, "methods": results}))


if __name__ == "__main__":
    main()
