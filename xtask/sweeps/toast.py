#!/usr/bin/env python3
"""TOAST's validation sweep (crates/toast/README.md, "The defaults come from a sweep").

Writes one experiment file per cell under OUT/configs, runs `cargo xtask train` on each (all
seeds of a cell in one run), and prints the table: validation accuracy at the selected epoch
(mean +- std over the seeds), the test accuracy at that epoch, and seconds per epoch.

    python3 xtask/sweeps/toast.py [--out target/toast-sweep] [--epochs 10] [--seeds 0,1,2]

No Python package beyond the standard library is needed.
"""
import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

# (label, method, [method_config] lines)
CELLS = [
    ("CE", "ce", {}),
    ("label smoothing", "label_smoothing", {}),
    ("PS-KD", "pskd", {}),
    ("DLB", "dlb", {}),
    ("TOAST append fresh f=1 (every row replayed: the old default)", "toast",
     {"batch_mode": "append", "candidates": "fresh", "replay_fraction": 1.0, "epsilon": 0.1, "lambda": 1.0}),
]
for eps in (0.0, 0.1, 0.3):
    for lam in (0.5, 1.0):
        CELLS.append((f"TOAST append fresh f=0.5 eps={eps} lambda={lam}", "toast",
                      {"batch_mode": "append", "candidates": "fresh", "replay_fraction": 0.5, "epsilon": eps, "lambda": lam}))
CELLS += [
    ("TOAST append fresh f=0.25 eps=0.1 lambda=1", "toast",
     {"batch_mode": "append", "candidates": "fresh", "replay_fraction": 0.25, "epsilon": 0.1, "lambda": 1.0}),
    ("TOAST append all f=0.5 eps=0.1 lambda=1", "toast",
     {"batch_mode": "append", "candidates": "all", "replay_fraction": 0.5, "epsilon": 0.1, "lambda": 1.0}),
    ("TOAST displace all f=0.5 eps=0.1 lambda=1", "toast",
     {"batch_mode": "displace", "candidates": "all", "replay_fraction": 0.5, "epsilon": 0.1, "lambda": 1.0}),
    ("TOAST displace fresh f=0.25 eps=0.1 lambda=1", "toast",
     {"batch_mode": "displace", "candidates": "fresh", "replay_fraction": 0.25, "epsilon": 0.1, "lambda": 1.0}),
]


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    return repr(v)


def experiment(method, method_config, epochs, seeds, train_limit):
    lines = [
        f'method = "{method}"',
        'dataset = "fashion-mnist"',
        'student = "mlpbn-32-16-16"',
        'backend = "flex"',
        f"seeds = [{', '.join(str(s) for s in seeds)}]",
        "",
        "[train]",
        f"epochs = {epochs}",
        "batch_size = 64",
        "lr_warmup_epochs = 0",
        "seed = 0",
        "eval_batch_size = 500",
        'optimizer = { kind = "sgd", lr = 0.05, momentum = 0.9, nesterov = false, weight_decay = 5e-4 }',
        'schedule = { kind = "cosine", min_lr = 0.0 }',
        "",
        "[data]",
        f"train_limit = {train_limit}",
    ]
    if method_config:
        lines += ["", "[method_config]"] + [f"{k} = {toml_value(v)}" for k, v in method_config.items()]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="target/toast-sweep")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--train-limit", type=int, default=5000)
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    (out / "configs").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (label, method, cfg) in enumerate(CELLS):
        path = out / "configs" / f"{i:02d}-{method}.toml"
        path.write_text(experiment(method, cfg, args.epochs, seeds, args.train_limit))
        run_dir = out / "runs" / f"{i:02d}"
        cmd = ["cargo", "xtask", "train", "--config", str(path), "--out", str(run_dir)]
        print("+", " ".join(cmd), file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        records = [r for r in json.loads((run_dir / "results.json").read_text()) if r["method"] == method]
        if len(records) != len(seeds) or any(r.get("error") for r in records):
            sys.exit(f"{label}: expected {len(seeds)} successful runs in {run_dir}/results.json")
        rows.append((label, records))

    def ms(values):
        return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"

    print(f"| cell | valid acc (%) | test acc at that epoch (%) | s/epoch |")
    print("|---|---|---|---|")
    for label, records in rows:
        print(f"| {label} | {ms([r['valid_acc'] for r in records])} | {ms([r['selected_acc'] for r in records])} | "
              f"{statistics.mean(r['seconds_per_epoch'] for r in records):.3f} |")


if __name__ == "__main__":
    main()
