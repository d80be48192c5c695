#!/usr/bin/env python3
"""Peer harness: trains the soft-prompt methods with Hugging Face PEFT + PyTorch (CPU) on ptune's
`rt-sentences` split, for the dev accuracies `docs/results.md` shows beside ptune's.

Stack: benches/peer/requirements.txt. Run from the repo root (`cargo xtask results --peer` calls this):

    python benches/peer/peft_train.py --out results.json
        [--methods prompt-tuning,p-tuning-mlp,p-tuning-lstm,prefix-tuning,p-tuning-v2,linear-probe,full-finetune]
        [--seeds 0,1,2] [--train-limit 400] [--epochs 1] [--batch-size 32] [--virtual-tokens 16]
        [--max-len 64] [--threads 2] [--preset ptune|peft-docs] [--lr METHOD=LR,...]
        [--pooling pooler|mean] [--no-dropout]

Presets: `ptune` (default) runs every method with ptune's settings (16 virtual tokens, the learning
rates `--lr` gives, AdamW weight decay 0, 0.01 for full fine-tuning); `peft-docs` with the settings of
PEFT's own sequence-classification guides (P-Tuning and Prompt Tuning: lr 1e-3, 20 / 10 virtual
tokens; prefix tuning: lr 1e-2, 20 virtual tokens) and HF's fine-tuning defaults (2e-5, weight decay
0.01). `--pooling mean` puts ptune's head on PEFT's model (a linear layer on the mean of the last
hidden state over the text tokens, virtual tokens stripped; PEFT's FEATURE_EXTRACTION task type);
the default is PEFT's BertForSequenceClassification, which classifies from the pooler.

Data: split.py (ptune's split, reproduced exactly); training on the first --train-limit rows of the
train split in split order, dev accuracy on every dev sentence after each epoch (the best is
reported), and test accuracy on every test sentence at each new best dev accuracy (the test score of
the epoch dev selects). Model: MiniLM from $PTUNE_CACHE/models/minilm as BertForSequenceClassification (2 labels;
peft_bench.load_base). Each (method, seed) runs in its own subprocess (this script re-invoked with
`--one method:seed`), so its peak RSS is its own. The child prints one JSON line; the parent collects
them, writes --out and prints a table (mean ± std over the seeds). A run that fails is recorded with
an "error" field and the others go on.
"""
import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import peft_bench  # noqa: E402  (MiniLM loading, RSS, list parsing)
import split  # noqa: E402  (ptune's rt-sentences split)

METHODS = ["prompt-tuning", "p-tuning-mlp", "p-tuning-lstm", "prefix-tuning", "p-tuning-v2",
           "linear-probe", "full-finetune"]
PEFT_METHODS = METHODS[:5]
# Peak learning rates of the ptune preset when --lr gives none (`cargo xtask results --peer` passes the
# rates its sweep chose for ptune).
LR = {"prompt-tuning": 3e-2, "p-tuning-mlp": 5e-3, "p-tuning-lstm": 5e-3, "prefix-tuning": 5e-3,
      "p-tuning-v2": 5e-2, "linear-probe": 1e-2, "full-finetune": 5e-5}
# PEFT's documented settings (its sequence-classification guides: P_Tuning, Prompt_Tuning and
# prefix_tuning for GLUE/MRPC) and HF's fine-tuning defaults: (learning rate, virtual tokens).
PEFT_DOCS = {"prompt-tuning": (1e-3, 10), "p-tuning-mlp": (1e-3, 20), "p-tuning-lstm": (1e-3, 20),
             "prefix-tuning": (1e-2, 20), "p-tuning-v2": (1e-2, 20), "linear-probe": (1e-3, 0),
             "full-finetune": (2e-5, 0)}
FULL_WEIGHT_DECAY = 0.01
WARMUP_RATIO = 0.06
GRAD_CLIP = 1.0
ADAM_EPS = 1e-8  # torch's default (Burn's AdamW default is 1e-5)
POOLING_NOTE = ("BertForSequenceClassification classifies from the pooler (dense + tanh over the first "
                "position's hidden state); ptune's default is mean pooling")
METHOD_NOTES = {
    "prompt-tuning": "PEFT PromptTuningConfig(RANDOM init: N(0, 1) rows); the virtual tokens are prepended, "
                     "so the pooler reads the first virtual token, not [CLS]",
    "p-tuning-mlp": "PEFT PromptEncoderConfig(MLP); the virtual tokens are prepended, so the pooler reads "
                    "the first virtual token, not [CLS]",
    "p-tuning-lstm": "PEFT PromptEncoderConfig(LSTM); the virtual tokens are prepended, so the pooler reads "
                     "the first virtual token, not [CLS]",
    "prefix-tuning": "PEFT PrefixTuningConfig(prefix_projection=True): per-layer key/value prefixes; "
                     "the pooler reads [CLS]",
    "p-tuning-v2": "PEFT PrefixTuningConfig(prefix_projection=False): a trainable per-layer key/value "
                   "prefix table; P-Tuning v2's prefix dropout does not exist in PEFT, so none is applied",
    "linear-probe": "no PEFT: BERT (pooler included) frozen, only the classifier trained",
    "full-finetune": "no PEFT: every parameter trained (ptune's --method full-finetune)",
}


def seed_list(value):
    try:
        seeds = [int(s) for s in value.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be integers, got `{value}`")
    if not seeds or any(s < 0 for s in seeds):
        raise argparse.ArgumentTypeError("give at least one seed, none negative")
    return seeds


def lr_overrides(value):
    out = {}
    for item in filter(None, (v.strip() for v in value.split(","))):
        method, _, lr = item.partition("=")
        if method not in METHODS:
            raise argparse.ArgumentTypeError(f"unknown method `{method}` in --lr")
        try:
            out[method] = float(lr)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--lr {item}: not a number")
    return out


def settings_for(args, method):
    """(learning rate, virtual tokens, weight decay) of `method` under the preset."""
    wd = FULL_WEIGHT_DECAY if method == "full-finetune" else 0.0
    if args.preset == "peft-docs":
        lr, n = PEFT_DOCS[method]
        return lr, n or args.virtual_tokens, wd
    return args.lr.get(method, LR[method]), args.virtual_tokens, wd


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="where to write the JSON results (required unless --one)")
    p.add_argument("--methods", default=",".join(METHODS),
                   type=lambda v: peft_bench.csv_list(v, METHODS, "method"))
    p.add_argument("--seeds", default="0,1,2", type=seed_list, help="comma-separated (default 0,1,2)")
    p.add_argument("--train-limit", type=int, default=400,
                   help="first N training sentences in split order (default 400; 0: all 8,035)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32, help="training and evaluation batch (default 32)")
    p.add_argument("--virtual-tokens", type=int, default=16)
    p.add_argument("--max-len", type=int, default=64, help="longest tokenized sentence, [SEP] kept (default 64)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument("--schedule", choices=["hf", "ptune"], default="hf",
                   help="hf: transformers.get_linear_schedule_with_warmup (default); ptune: ptune's "
                        "lr_at (step k of warmup w gets (k+1)/w of the peak)")
    p.add_argument("--clip", choices=["global", "per-tensor"], default="global",
                   help="global: torch clip_grad_norm_ over all trainable tensors (default); per-tensor: "
                        "each tensor's gradient clipped to norm 1 on its own, as Burn does")
    p.add_argument("--no-dropout", action="store_true",
                   help="switch off BERT's dropout while training (ptune's backbone has none)")
    p.add_argument("--preset", choices=["ptune", "peft-docs"], default="ptune",
                   help="ptune: ptune's settings (default); peft-docs: PEFT's documented ones")
    p.add_argument("--lr", default="", type=lr_overrides,
                   help="METHOD=LR,... learning rates over the preset's (ptune preset)")
    p.add_argument("--pooling", choices=["pooler", "mean"], default="pooler",
                   help="pooler: BertForSequenceClassification (default); mean: ptune's head")
    p.add_argument("--verbose", action="store_true", help="echo each child's stderr")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one method:seed in this process
    args = p.parse_args(argv)
    if args.one is None and not args.out:
        p.error("--out is required")
    if min(args.epochs, args.batch_size, args.virtual_tokens, args.threads) < 1 or args.max_len < 2 \
            or args.train_limit < 0:
        p.error("--epochs, --batch-size, --virtual-tokens, --threads must be >= 1, --max-len >= 2, "
                "--train-limit >= 0")
    return args


def settings_of(args):
    return {"dataset": "rt-sentences", "split": "ptune split_indices(n, 0.1, 0.1, seed 13); split.py",
            "train_limit": args.train_limit or None, "epochs": args.epochs, "batch_size": args.batch_size,
            "preset": args.preset, "pooling_head": args.pooling,
            "virtual_tokens": {m: settings_for(args, m)[1] for m in args.methods}, "max_len": args.max_len,
            "lr": {m: settings_for(args, m)[0] for m in args.methods},
            "optimizer": {"name": "torch.optim.AdamW", "betas": [0.9, 0.999], "eps": ADAM_EPS,
                          "weight_decay": {m: settings_for(args, m)[2] for m in args.methods}},
            "schedule": ("transformers.get_linear_schedule_with_warmup" if args.schedule == "hf"
                         else "ptune lr_at (linear warmup from lr/warmup, then linear decay to 0)"),
            "warmup_ratio": WARMUP_RATIO, "warmup_steps": "round(0.06 * total optimizer steps), halves away from 0",
            "grad_clip": {"max_norm": GRAD_CLIP, "kind": args.clip},
            "dropout": "off" if args.no_dropout else "transformers defaults (0.1) in training",
            "shuffle": "torch.randperm per epoch, torch.Generator seeded with the seed; last partial batch kept",
            "padding": "dynamic per batch, [PAD] = 0, attention_mask", "eval": "every dev sentence after each epoch, in batches of --batch-size sorted by length",
            "pooling": POOLING_NOTE if args.pooling == "pooler" else MEAN_NOTE, "model": str(peft_bench.MINILM_DIR)}


# ----------------------------------------------------------------------------------------------------
# Child: one (method, seed).

def tokenize(texts, max_len):
    """ptune's rule: the tokenizer's special tokens ([CLS] … [SEP]), no truncation or padding from
    tokenizer.json; longer than max_len → the first max_len ids with the last replaced by the final id."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(peft_bench.MINILM_DIR / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    out = []
    for enc in tok.encode_batch(texts, add_special_tokens=True):
        ids = list(enc.ids)
        if len(ids) > max_len:
            ids = ids[:max_len - 1] + [ids[-1]]
        out.append(ids)
    pad = tok.token_to_id("[PAD]")
    return out, (0 if pad is None else pad)


def collate(rows, labels, pad_id):
    import torch
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, :len(r)] = 1
    return {"input_ids": ids, "attention_mask": mask}, torch.tensor(labels, dtype=torch.long)


MEAN_NOTE = ("ptune's head on PEFT's model: a linear layer on the mean of BertModel's last hidden state over "
             "the text tokens (virtual tokens stripped); PEFT task type FEATURE_EXTRACTION")


def mean_pooled(encoder, hidden, n_labels, n_virtual):
    """ptune's mean-pooling head over `encoder` (BertModel, or a PEFT FEATURE_EXTRACTION model whose
    output starts with `n_virtual` virtual positions)."""
    import types
    import torch

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = encoder
            self.classifier = torch.nn.Linear(hidden, n_labels)

        def forward(self, input_ids, attention_mask, labels=None):
            out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
            h = out.last_hidden_state[:, n_virtual:, :]
            keep = attention_mask.unsqueeze(-1).to(h.dtype)
            logits = self.classifier((h * keep).sum(1) / keep.sum(1).clamp(min=1.0))
            loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
            return types.SimpleNamespace(loss=loss, logits=logits)

    return Model()


def peft_config(method, n, task=None):
    from peft import PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig, TaskType
    task = task or TaskType.SEQ_CLS
    if method == "prompt-tuning":
        return PromptTuningConfig(task_type=task, num_virtual_tokens=n)  # RANDOM init
    if method == "p-tuning-mlp":
        return PromptEncoderConfig(task_type=task, num_virtual_tokens=n,
                                   encoder_reparameterization_type="MLP", encoder_hidden_size=128)
    if method == "p-tuning-lstm":
        return PromptEncoderConfig(task_type=task, num_virtual_tokens=n,
                                   encoder_reparameterization_type="LSTM", encoder_hidden_size=128)
    if method == "prefix-tuning":
        return PrefixTuningConfig(task_type=task, num_virtual_tokens=n, prefix_projection=True,
                                  encoder_hidden_size=512)
    if method == "p-tuning-v2":
        return PrefixTuningConfig(task_type=task, num_virtual_tokens=n, prefix_projection=False)
    raise ValueError(method)


def build_model(method, n_virtual, pooling="pooler"):
    """(model, loaded facts); call after torch.manual_seed."""
    base, loaded = peft_bench.load_base("minilm")
    if pooling == "mean":
        from peft import TaskType, get_peft_model
        encoder = base.bert
        encoder.pooler = None  # the mean head does not read it; keeps it out of the trainable count
        input_level = method in ("prompt-tuning", "p-tuning-mlp", "p-tuning-lstm")
        if method in PEFT_METHODS:
            encoder = get_peft_model(encoder, peft_config(method, n_virtual, TaskType.FEATURE_EXTRACTION))
        else:
            for p in encoder.parameters():
                p.requires_grad_(method == "full-finetune")
        hidden = base.config.hidden_size
        model = mean_pooled(encoder, hidden, 2, n_virtual if input_level else 0)
        return model, loaded
    if method in PEFT_METHODS:
        from peft import get_peft_model
        return get_peft_model(base, peft_config(method, n_virtual)), loaded
    if method == "linear-probe":
        for p in base.bert.parameters():
            p.requires_grad_(False)
        for p in base.classifier.parameters():
            p.requires_grad_(True)
    else:  # full-finetune
        for p in base.parameters():
            p.requires_grad_(True)
    return base, loaded


def disable_dropout(model):
    import torch
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if hasattr(m, "dropout_prob"):  # BertSdpaSelfAttention's attention dropout
            m.dropout_prob = 0.0


def lr_lambda_ptune(total, warmup):
    """ptune_train::schedule::lr_at (Linear) as a LambdaLR factor of optimizer step k (0-based)."""
    def f(k):
        if k < warmup:
            return (k + 1) / warmup
        span = max(total - warmup, 1)
        return 1.0 - min((k - warmup) / span, 1.0)
    return f


def clip_per_tensor(params, max_norm):
    import torch
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                norm = p.grad.norm(2)
                if norm > max_norm:
                    p.grad.mul_(max_norm / norm)


def evaluate(model, rows, labels, batch_size, pad_id):
    import torch
    model.eval()
    correct = 0
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # less padding; per-row results unchanged
    with torch.no_grad():
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            batch, y = collate([rows[i] for i in idx], [labels[i] for i in idx], pad_id)
            logits = model(**batch).logits
            correct += int((logits.argmax(-1) == y).sum())
    return correct / len(rows)


def run_one(args):
    import torch
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    method, seed = args.one.split(":", 1)
    seed = int(seed)

    t0 = time.perf_counter()
    data = split.rt_splits(train_limit=args.train_limit or None)
    train_rows, pad_id = tokenize([r["text"] for r in data["train"]], args.max_len)
    dev_rows, _ = tokenize([r["text"] for r in data["dev"]], args.max_len)
    train_y = [r["label"] for r in data["train"]]
    dev_y = [r["label"] for r in data["dev"]]
    test_rows, _ = tokenize([r["text"] for r in data["test"]], args.max_len)
    test_y = [r["label"] for r in data["test"]]
    data_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    lr, n_virtual, weight_decay = settings_for(args, method)
    model, loaded = build_model(method, n_virtual, args.pooling)
    if args.no_dropout:
        disable_dropout(model)
    load_s = time.perf_counter() - t0
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)

    from transformers import get_linear_schedule_with_warmup
    bs = args.batch_size
    steps_per_epoch = math.ceil(len(train_rows) / bs)
    total = steps_per_epoch * args.epochs
    warmup = int(split.round_half_away(total * WARMUP_RATIO))
    opt = torch.optim.AdamW(trainable, lr=lr, betas=(0.9, 0.999), eps=ADAM_EPS, weight_decay=weight_decay)
    if args.schedule == "hf":
        sched = get_linear_schedule_with_warmup(opt, warmup, total)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda_ptune(total, warmup))
    gen = torch.Generator().manual_seed(seed)

    history = []
    best_dev, test_acc = -1.0, float("nan")
    for epoch in range(args.epochs):
        model.train()
        t0 = time.perf_counter()
        perm = torch.randperm(len(train_rows), generator=gen).tolist()
        losses = []
        for s in range(0, len(perm), bs):
            idx = perm[s:s + bs]
            batch, y = collate([train_rows[i] for i in idx], [train_y[i] for i in idx], pad_id)
            loss = model(**batch, labels=y).loss
            if not torch.isfinite(loss):
                raise RuntimeError(f"non-finite loss {loss.item()} at epoch {epoch + 1}, step {len(losses)}")
            loss.backward()
            if args.clip == "global":
                torch.nn.utils.clip_grad_norm_(trainable, GRAD_CLIP)
            else:
                clip_per_tensor(trainable, GRAD_CLIP)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        acc = evaluate(model, dev_rows, dev_y, bs, pad_id)
        eval_s = time.perf_counter() - t0
        if acc > best_dev:
            best_dev, test_acc = acc, evaluate(model, test_rows, test_y, bs, pad_id)
        history.append({"epoch": epoch + 1, "train_loss": statistics.fmean(losses), "dev_accuracy": acc,
                        "train_seconds": train_s, "eval_seconds": eval_s})
        print(f"{method} seed {seed} epoch {epoch + 1}: loss {history[-1]['train_loss']:.4f}, "
              f"dev accuracy {acc:.4f} ({train_s:.1f} s + eval {eval_s:.1f} s)", file=sys.stderr, flush=True)

    best = max(history, key=lambda h: h["dev_accuracy"])
    rec = {"method": method, "seed": seed, "trainable_params": n_trainable, "lr": lr,
           "virtual_tokens": n_virtual, "weight_decay": weight_decay, "preset": args.preset,
           "pooling_head": args.pooling, "test_accuracy": test_acc,
           "dev_accuracy": best["dev_accuracy"], "best_epoch": best["epoch"],
           "seconds_per_epoch": statistics.fmean(h["train_seconds"] for h in history),
           "eval_seconds": statistics.fmean(h["eval_seconds"] for h in history),
           "peak_rss_mb": peft_bench.peak_rss_mb(), "train_sentences": len(train_rows),
           "dev_sentences": len(dev_rows), "optimizer_steps": total, "warmup_steps": warmup,
           "load_seconds": load_s, "data_seconds": data_s, "history": history,
           "pooling": POOLING_NOTE if args.pooling == "pooler" else MEAN_NOTE, "note": METHOD_NOTES[method]}
    return {"result": rec, "loaded": loaded,
            "attn_implementation": getattr(getattr(model, "config", None), "_attn_implementation", None)}


def child_main(args):
    out = sys.stdout
    try:
        with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the one JSON line
            payload = run_one(args)
    except Exception as e:
        import traceback
        traceback.print_exc()
        method, seed = args.one.split(":", 1)
        payload = {"result": {"method": method, "seed": int(seed), "error": f"{type(e).__name__}: {e}"}}
    out.write(json.dumps(payload) + "\n")
    out.flush()


# ----------------------------------------------------------------------------------------------------
# Parent: one child per (method, seed); collect, write, print.

def run_child(args, method, seed):
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", f"{method}:{seed}",
           "--train-limit", str(args.train_limit), "--epochs", str(args.epochs),
           "--batch-size", str(args.batch_size), "--virtual-tokens", str(args.virtual_tokens),
           "--max-len", str(args.max_len), "--threads", str(args.threads),
           "--schedule", args.schedule, "--clip", args.clip, "--preset", args.preset, "--pooling", args.pooling,
           "--lr", ",".join(f"{m}={v}" for m, v in args.lr.items())] + (["--no-dropout"] if args.no_dropout else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if args.verbose and proc.stderr:
        sys.stderr.write(proc.stderr)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                pass
    tail = (proc.stderr or "").strip().splitlines()[-5:]
    return {"result": {"method": method, "seed": seed,
                       "error": f"child exited with {proc.returncode} without a result: " + " | ".join(tail)}}


def mean_std(values):
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(results, methods):
    rows = []
    for m in methods:
        ok = [r for r in results if r["method"] == m and "error" not in r]
        failed = sum(1 for r in results if r["method"] == m and "error" in r)
        acc, acc_sd = mean_std([r["dev_accuracy"] for r in ok])
        test, test_sd = mean_std([r["test_accuracy"] for r in ok])
        rows.append({"method": m, "runs": len(ok), "failed": failed,
                     "trainable_params": ok[0]["trainable_params"] if ok else None,
                     "lr": ok[0]["lr"] if ok else None, "virtual_tokens": ok[0]["virtual_tokens"] if ok else None,
                     "test_accuracy_mean": test, "test_accuracy_std": test_sd,
                     "dev_accuracy_mean": acc, "dev_accuracy_std": acc_sd,
                     "seconds_per_epoch_mean": mean_std([r["seconds_per_epoch"] for r in ok])[0],
                     "eval_seconds_mean": mean_std([r["eval_seconds"] for r in ok])[0],
                     "peak_rss_mb_max": max((r["peak_rss_mb"] for r in ok), default=None)})
    return rows


def fmt_table(summary):
    head = ["method", "lr", "trainable", "dev accuracy (mean ± std)", "test accuracy", "runs", "s/epoch",
            "eval s", "peak RSS MB"]
    rows = []
    for s in summary:
        if not s["runs"]:
            rows.append([s["method"], "", "", "ERROR", "", f"0/{s['failed']}", "", "", ""])
            continue
        rows.append([s["method"], f"{s['lr']:g}", f"{s['trainable_params']:,}",
                     f"{s['dev_accuracy_mean']:.4f} ± {s['dev_accuracy_std']:.4f}",
                     f"{s['test_accuracy_mean']:.4f} ± {s['test_accuracy_std']:.4f}",
                     f"{s['runs']}" + (f" ({s['failed']} failed)" if s["failed"] else ""),
                     f"{s['seconds_per_epoch_mean']:.1f}", f"{s['eval_seconds_mean']:.1f}",
                     f"{s['peak_rss_mb_max']:.0f}"])
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])


def parent_main(args):
    import peft
    import tokenizers
    import torch
    import transformers
    started = time.perf_counter()
    results, loaded, attn = [], None, None
    for method in args.methods:
        for seed in args.seeds:
            t0 = time.perf_counter()
            payload = run_child(args, method, seed)
            r = payload["result"]
            print(json.dumps({k: v for k, v in r.items() if k != "history"}), flush=True)
            print(f"# {method} seed {seed} done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
            results.append(r)
            loaded = loaded or payload.get("loaded")
            attn = attn or payload.get("attn_implementation")
    summary = summarize(results, args.methods)
    doc = {
        "framework": "peft",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": peft.__version__, "tokenizers": tokenizers.__version__,
                     "python": platform.python_version()},
        "threads": args.threads,
        "interop_threads": 1,
        "device": "cpu",
        "seeds": args.seeds,
        "settings": settings_of(args),
        "attn_implementation": attn,
        "loaded": loaded,
        "wall_s": time.perf_counter() - started,
        "summary": summary,
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print()
    print(fmt_table(summary))
    print(f"\n{POOLING_NOTE}.")
    print(f"wrote {args.out} ({doc['wall_s']:.1f} s)")
    failed = sum("error" in r for r in results)
    if failed:
        print(f"warning: {failed} run(s) recorded an error", file=sys.stderr)


if __name__ == "__main__":
    a = parse_args()
    if a.one:
        child_main(a)
    else:
        parent_main(a)
