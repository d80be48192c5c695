#!/usr/bin/env python3
"""Peer harness: times Hugging Face PEFT + PyTorch (CPU) on the workload ptune's Rust benchmark times.

Stack: benches/peer/requirements.txt. Run from the repo root (`cargo xtask bench --peer` calls this):

    python benches/peer/peft_bench.py --out results.json [--models minilm,smollm2]
        [--methods prompt-tuning,p-tuning-mlp,p-tuning-lstm,prefix-tuning,p-tuning-v2]
        [--phases forward,train-step] [--warmup 1] [--iters 3] [--threads 2]

Each (model, method) runs in its own subprocess (this script re-invoked with `--one model:method`), so
the peak RSS reported is that workload's alone. The child prints one JSON line; the parent collects
them, writes --out and prints a table. A workload that fails is recorded with an "error" field.

Models are read from $PTUNE_CACHE (default ~/.cache/ptune), as `cargo xtask fetch` lays them out:
  models/minilm/ (HF folder, encoder keys without the `bert.` prefix) and
  models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf (dequantized to fp32 by transformers).
"""
import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

MODELS = ["minilm", "smollm2"]
METHODS = ["prompt-tuning", "p-tuning-mlp", "p-tuning-lstm", "prefix-tuning", "p-tuning-v2"]
PHASES = ["forward", "train-step"]
VIRTUAL_TOKENS = 20
SEQ_LEN = 128
BATCH = {"minilm": 32, "smollm2": 8}
LR = 1e-3
CACHE = Path(os.environ.get("PTUNE_CACHE", Path.home() / ".cache" / "ptune"))
MINILM_DIR = CACHE / "models" / "minilm"
SMOLLM2_DIR = CACHE / "models" / "smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
METHOD_NOTES = {
    "p-tuning-v2": "PEFT PrefixTuningConfig(prefix_projection=False): a trainable per-layer key/value "
                   "prefix table; P-Tuning v2's prefix dropout does not exist in PEFT, so none is applied",
}


def csv_list(value, allowed, what):
    items = [s.strip() for s in value.split(",") if s.strip()]
    bad = [s for s in items if s not in allowed]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"unknown {what} {bad}; choose from {','.join(allowed)}")
    return items


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="where to write the JSON results (required unless --one)")
    p.add_argument("--models", default=",".join(MODELS), type=lambda v: csv_list(v, MODELS, "model"))
    p.add_argument("--methods", default=",".join(METHODS), type=lambda v: csv_list(v, METHODS, "method"))
    p.add_argument("--phases", default=",".join(PHASES), type=lambda v: csv_list(v, PHASES, "phase"))
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations per phase (default 1)")
    p.add_argument("--iters", type=int, default=3, help="timed iterations per phase (default 3)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument("--verbose", action="store_true", help="echo each child's stderr")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one model:method in this process
    args = p.parse_args(argv)
    if args.one is None and not args.out:
        p.error("--out is required")
    if args.iters < 1 or args.warmup < 0 or args.threads < 1:
        p.error("--iters and --threads must be >= 1, --warmup >= 0")
    return args


# ----------------------------------------------------------------------------------------------------
# Child: one (model, method), every requested phase.

def peak_rss_mb():
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def make_batch(model_name):
    import torch
    b = BATCH[model_name]
    if model_name == "minilm":
        rows = [[101] + [1000 + ((r * 7 + j * 13) % 20000) for j in range(SEQ_LEN - 2)] + [102]
                for r in range(b)]
        labels = torch.tensor([r % 2 for r in range(b)], dtype=torch.long)
    else:
        rows = [[(r * 7 + j * 13) % 20000 + 100 for j in range(SEQ_LEN)] for r in range(b)]
        labels = None
    ids = torch.tensor(rows, dtype=torch.long)
    if labels is None:
        labels = ids.clone()  # causal LM loss; transformers shifts internally
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, labels


def load_base(model_name):
    """Returns (base model, facts about what was loaded)."""
    import torch
    if model_name == "minilm":
        from safetensors import safe_open
        from transformers import BertForSequenceClassification
        model = BertForSequenceClassification.from_pretrained(MINILM_DIR, num_labels=2)
        # The checkpoint's keys carry no `bert.` prefix; check transformers mapped every one of them.
        own = {**dict(model.bert.named_buffers()), **dict(model.bert.named_parameters())}
        with safe_open(MINILM_DIR / "model.safetensors", "pt") as f:
            keys = list(f.keys())
            mismatched = [k for k in keys if k.removeprefix("bert.") not in own
                          or not torch.equal(f.get_tensor(k), own[k.removeprefix("bert.")])]
        if mismatched:
            raise RuntimeError(f"MiniLM weights not loaded from the checkpoint: {mismatched[:5]}")
        return model, {"weights": str(MINILM_DIR / "model.safetensors"), "checkpoint_tensors_verified": len(keys),
                       "newly_initialized": ["classifier.weight", "classifier.bias"]}
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(SMOLLM2_DIR, gguf_file=SMOLLM2_GGUF, torch_dtype=torch.float32)
    return model, {"weights": str(SMOLLM2_DIR / SMOLLM2_GGUF), "dequantized_to": "float32"}


def peft_config(model_name, method):
    from peft import PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig, TaskType
    task = TaskType.SEQ_CLS if model_name == "minilm" else TaskType.CAUSAL_LM
    n = VIRTUAL_TOKENS
    if method == "prompt-tuning":
        return PromptTuningConfig(task_type=task, num_virtual_tokens=n)  # random init
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


def time_phase(step, warmup, iters):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def run_one(args):
    import torch
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    from peft import get_peft_model

    model_name, method = args.one.split(":", 1)
    batch, labels = make_batch(model_name)
    base, loaded = load_base(model_name)
    model = get_peft_model(base, peft_config(model_name, method))
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)
    common = {"model": model_name, "method": method, "batch": BATCH[model_name], "seq_len": SEQ_LEN,
              "virtual_tokens": VIRTUAL_TOKENS, "warmup": args.warmup, "iters": args.iters,
              "trainable_params": n_trainable}
    if method in METHOD_NOTES:
        common["note"] = METHOD_NOTES[method]

    results = []
    for phase in args.phases:
        rec = dict(common, phase=phase)
        try:
            if phase == "forward":
                model.eval()

                def step():
                    with torch.no_grad():
                        model(**batch)
            else:
                model.train()
                opt = torch.optim.AdamW(trainable, lr=LR)

                def step():
                    loss = model(**batch, labels=labels).loss
                    loss.backward()
                    opt.step()
                    opt.zero_grad()
            times = time_phase(step, args.warmup, args.iters)
            med = statistics.median(times)
            rec.update(seconds_per_iter=med, examples_per_s=BATCH[model_name] / med, times=times)
        except Exception as e:  # a combination PEFT cannot run: record it, go on
            rec["error"] = f"{type(e).__name__}: {e}"
        results.append(rec)
    rss = peak_rss_mb()
    for rec in results:
        rec["peak_rss_mb"] = rss
    return {"results": results, "loaded": loaded,
            "attn_implementation": getattr(base.config, "_attn_implementation", None)}


def child_main(args):
    out = sys.stdout
    try:
        with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the one JSON line
            payload = run_one(args)
    except Exception as e:
        import traceback
        traceback.print_exc()
        model_name, method = args.one.split(":", 1)
        payload = {"results": [{"model": model_name, "method": method, "phase": ph,
                                "error": f"{type(e).__name__}: {e}"} for ph in args.phases]}
    out.write(json.dumps(payload) + "\n")
    out.flush()


# ----------------------------------------------------------------------------------------------------
# Parent: one child per (model, method); collect, write, print.

def run_child(args, model_name, method):
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", f"{model_name}:{method}",
           "--phases", ",".join(args.phases), "--warmup", str(args.warmup), "--iters", str(args.iters),
           "--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if args.verbose and proc.stderr:
        sys.stderr.write(proc.stderr)
    payload = None
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            try:
                payload = json.loads(line)
                break
            except json.JSONDecodeError:
                pass
    if payload is None:
        tail = (proc.stderr or "").strip().splitlines()[-5:]
        err = f"child exited with {proc.returncode} without a result: " + " | ".join(tail)
        payload = {"results": [{"model": model_name, "method": method, "phase": ph, "error": err}
                               for ph in args.phases]}
    return payload


def fmt_table(results):
    head = ["model", "method", "phase", "batch", "s/iter", "ex/s", "peak RSS MB", "trainable"]
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["model"], r["method"], r["phase"], str(r.get("batch", "")), "ERROR",
                         r["error"][:60], "", ""])
        else:
            rows.append([r["model"], r["method"], r["phase"], str(r["batch"]), f"{r['seconds_per_iter']:.4f}",
                         f"{r['examples_per_s']:.2f}", f"{r['peak_rss_mb']:.0f}", f"{r['trainable_params']:,}"])
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])


def parent_main(args):
    import peft
    import torch
    import transformers
    started = time.perf_counter()
    results, loaded, attn = [], {}, {}
    for model_name in args.models:
        for method in args.methods:
            t0 = time.perf_counter()
            payload = run_child(args, model_name, method)
            for r in payload["results"]:
                print(json.dumps(r), flush=True)
            print(f"# {model_name}:{method} done in {time.perf_counter() - t0:.1f} s", file=sys.stderr,
                  flush=True)
            results.extend(payload["results"])
            if "loaded" in payload:
                loaded[model_name] = payload["loaded"]
                attn[model_name] = payload.get("attn_implementation")
    doc = {
        "framework": "peft",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": peft.__version__, "python": platform.python_version()},
        "threads": args.threads,
        "interop_threads": 1,
        "device": "cpu",
        "warmup": args.warmup,
        "iters": args.iters,
        "attn_implementation": attn,
        "loaded": loaded,
        "wall_s": time.perf_counter() - started,
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print()
    print(fmt_table(results))
    print(f"\nwrote {args.out} ({doc['wall_s']:.1f} s)")
    failed = sum("error" in r for r in results)
    if failed:
        print(f"warning: {failed} result(s) recorded an error", file=sys.stderr)


if __name__ == "__main__":
    a = parse_args()
    if a.one:
        child_main(a)
    else:
        parent_main(a)
