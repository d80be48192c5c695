#!/usr/bin/env python3
"""Writes the parity fixtures of ptune-transformer (dev-time only; the outputs are committed).

Reference stack: scripts/requirements.txt (torch CPU, transformers 4.57.6). Run from the repo root:

    python3 -m venv .venv-ref && .venv-ref/bin/pip install -r scripts/requirements.txt
    cargo xtask fetch minilm && cargo xtask fetch smollm2
    .venv-ref/bin/python scripts/gen_reference.py

Writes crates/ptune-transformer/tests/fixtures/:
  tiny-bert/{config.json, model.safetensors, tokenizer.json}, tiny-llama/{...}, tiny-roberta/{...}, tiny-qwen2/{...}:
      small random models (seeded);
  tiny_<model>_reference.json: their outputs on fixed inputs, plain, with a padding mask, and with
      a random prefix passed as past_key_values (a DynamicCache, as PEFT does);
  minilm_reference.json: real all-MiniLM-L6-v2 token ids and last hidden states on fixed sentences;
  smollm2_reference.json: real SmolLM2-135M-Instruct (GGUF, dequantized by transformers) token ids,
      logits slices and greedy continuations.
and crates/ptune-prompt/tests/fixtures/peft/<model>-<method>/ (peft 0.21.2), for the tiny BERT
(SEQ_CLS, with PEFT's classifier) and the tiny Llama (CAUSAL_LM) and each method:
  adapter_config.json, adapter_model.safetensors: PEFT's own save_pretrained output;
  encoder.safetensors: the trainable prompt encoder (before materialization);
  reference.json: inputs and the logits PEFT computes with the adapter (eval mode).
`roundtrip` (run after `cargo xtask test` wrote ptune's adapters under target/ptune-adapters) loads
ptune's adapters in PEFT and compares the logits to ptune's (written beside them).
"""
import json
import os
from pathlib import Path

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoTokenizer,
    BertConfig,
    BertModel,
    DynamicCache,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    RobertaConfig,
    RobertaModel,
)

assert transformers.__version__ == "4.57.6", transformers.__version__
torch.set_num_threads(2)
ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "crates" / "ptune-transformer" / "tests" / "fixtures"
CACHE = Path(os.environ.get("PTUNE_CACHE", Path.home() / ".cache" / "ptune"))


def t2j(t):
    t = t.detach().to(torch.float32)
    return {"shape": list(t.shape), "data": [float(f"{x:.8g}") for x in t.flatten().tolist()]}


def ids2j(t):
    return {"shape": list(t.shape), "data": [int(x) for x in t.flatten().tolist()]}


def randomize(model, seed):
    """Default HF init leaves norms at 1/0 and biases at 0: perturb everything so parity means something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name.lower() or "LayerNorm" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g) if name.endswith("weight")
                        else 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.08 * torch.randn(p.shape, generator=g))


def prefix_cache(prefix):
    cache = DynamicCache()
    for i, (k, v) in enumerate(prefix):
        cache.update(k.clone(), v.clone(), i)
    return cache


def tiny_bert_tokenizer():
    """A WordPiece tokenizer.json over the tiny BERT's 120 ids (BERT's special tokens and template),
    so the CLI can train the tiny model end to end (the kill test of ptune-cli)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = list("abcdefghijklmnopqrstuvwxyz")
    words = ["the", "a", "good", "bad", "film", "movie", "great", "dull", "fun", "boring", "and", "is",
             "was", "not", "very", "plot", "acting", "love", "hate", "best", "worst", "story", "it", "of"]
    pieces = ["##" + c for c in letters]
    punct = list(".,!?'-")
    vocab = special + words + letters + pieces + punct
    vocab += [f"##{w}" for w in ["s", "ed", "ing", "ly"] if f"##{w}" not in vocab]
    vocab = list(dict.fromkeys(vocab))
    assert len(vocab) <= 120, len(vocab)
    while len(vocab) < 120:
        vocab.append(f"[unused{len(vocab)}]")
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.decoder = decoders.WordPiece()
    tok.save(str(OUT / "tiny-bert" / "tokenizer.json"))


def encoder_fixture(name, model, low_id, types_from):
    """Writes tiny-<name>/ and tiny_<name>_reference.json for a BERT-family encoder (vocab 120)."""
    model.save_pretrained(OUT / f"tiny-{name}", safe_serialization=True)
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(low_id, 120, (2, 7), generator=g)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0
    types = torch.zeros(2, 7, dtype=torch.long)
    types[:, types_from:] = 1
    n_prefix, hd = 3, 8
    prefix = [(torch.randn(2, 4, n_prefix, hd, generator=g), torch.randn(2, 4, n_prefix, hd, generator=g))
              for _ in range(2)]
    with torch.no_grad():
        plain = model(input_ids=ids, token_type_ids=types)
        masked = model(input_ids=ids, attention_mask=mask, token_type_ids=types)
        full_mask = torch.cat([torch.ones(2, n_prefix, dtype=torch.long), mask], 1)
        pre = model(input_ids=ids, attention_mask=full_mask, token_type_ids=types,
                    past_key_values=prefix_cache(prefix), use_cache=True)
    ref = {
        "input_ids": ids2j(ids), "attention_mask": ids2j(mask), "token_type_ids": ids2j(types),
        "plain_last_hidden": t2j(plain.last_hidden_state), "plain_pooled": t2j(plain.pooler_output),
        "masked_last_hidden": t2j(masked.last_hidden_state),
        "prefix_keys": [t2j(k) for k, _ in prefix], "prefix_values": [t2j(v) for _, v in prefix],
        "prefix_last_hidden": t2j(pre.last_hidden_state),
    }
    (OUT / f"tiny_{name}_reference.json").write_text(json.dumps(ref))


def tiny_bert():
    cfg = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=40, type_vocab_size=2,
                     layer_norm_eps=1e-12, attn_implementation="eager")
    torch.manual_seed(0)
    model = BertModel(cfg, add_pooling_layer=True).eval()
    randomize(model, 1)
    encoder_fixture("bert", model, 1, 4)


def tiny_roberta():
    # RoBERTa: positions from pad_token_id + 1 = 2, one token type, LayerNorm eps 1e-5. Ids start at 3
    # so that no input token is the padding id (HF derives positions from the ids).
    cfg = RobertaConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=42, type_vocab_size=1,
                        layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                        attn_implementation="eager")
    torch.manual_seed(0)
    model = RobertaModel(cfg, add_pooling_layer=True).eval()
    randomize(model, 5)
    encoder_fixture("roberta", model, 3, 7)


def decoder_fixture(name, model, seed):
    """Writes tiny-<name>/ and tiny_<name>_reference.json for a Llama-family decoder (vocab 128)."""
    model.save_pretrained(OUT / f"tiny-{name}", safe_serialization=True)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 128, (2, 6), generator=g)
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, 4:] = 0
    n_prefix, hd = 3, 16
    prefix = [(torch.randn(2, 2, n_prefix, hd, generator=g), torch.randn(2, 2, n_prefix, hd, generator=g))
              for _ in range(2)]
    with torch.no_grad():
        plain = model(input_ids=ids, output_hidden_states=True)
        masked = model(input_ids=ids, attention_mask=mask)
        full_mask = torch.cat([torch.ones(2, n_prefix, dtype=torch.long), mask], 1)
        pre = model(input_ids=ids, attention_mask=full_mask, past_key_values=prefix_cache(prefix),
                    use_cache=True)
    ref = {
        "input_ids": ids2j(ids), "attention_mask": ids2j(mask),
        "plain_last_hidden": t2j(plain.hidden_states[-1]), "plain_logits": t2j(plain.logits),
        "masked_logits": t2j(masked.logits),
        "prefix_keys": [t2j(k) for k, _ in prefix], "prefix_values": [t2j(v) for _, v in prefix],
        "prefix_logits": t2j(pre.logits),
    }
    (OUT / f"tiny_{name}_reference.json").write_text(json.dumps(ref))


def tiny_llama():
    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      rms_norm_eps=1e-5, rope_theta=500.0, tie_word_embeddings=False,
                      attn_implementation="eager")
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    randomize(model, 3)
    decoder_fixture("llama", model, 4)


def tiny_qwen2():
    # Qwen2: biases on q/k/v (randomized like every other parameter), tied embeddings.
    cfg = Qwen2Config(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      rms_norm_eps=1e-6, rope_theta=1000.0, tie_word_embeddings=True,
                      use_sliding_window=False, attn_implementation="eager")
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg).eval()
    randomize(model, 6)
    decoder_fixture("qwen2", model, 7)


MINILM_SENTENCES = [
    "The movie was a delight from start to finish.",
    "A tedious, overlong mess.",
    "Soft prompts steer frozen transformers!",
]


def minilm():
    path = CACHE / "models" / "minilm"
    tok = AutoTokenizer.from_pretrained(path)
    model = BertModel.from_pretrained(path, attn_implementation="eager").eval()
    ref = {"sentences": []}
    for s in MINILM_SENTENCES:
        ids = tok(s, return_tensors="pt", padding=False, truncation=False)["input_ids"]
        with torch.no_grad():
            out = model(input_ids=ids)
        ref["sentences"].append({"text": s, "ids": ids[0].tolist(),
                                 "last_hidden": t2j(out.last_hidden_state[0]),
                                 "pooled": t2j(out.pooler_output[0])})
    batch = tok(MINILM_SENTENCES, return_tensors="pt", padding="longest", truncation=False)
    with torch.no_grad():
        out = model(**batch)
    ref["batch"] = {"input_ids": ids2j(batch["input_ids"]), "attention_mask": ids2j(batch["attention_mask"]),
                    "last_hidden": t2j(out.last_hidden_state)}
    ref["num_params"] = sum(p.numel() for p in model.parameters())
    (OUT / "minilm_reference.json").write_text(json.dumps(ref))


SMOLLM_PROMPTS = ["The capital of France is", "One, two, three, four,"]


def smollm2():
    path = CACHE / "models" / "smollm2"
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    tok = AutoTokenizer.from_pretrained(path, gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(path, gguf_file=gguf, torch_dtype=torch.float32).eval()
    ref = {"prompts": [], "num_params": sum(p.numel() for p in model.parameters())}
    for prompt in SMOLLM_PROMPTS:
        # The file says tokenizer.ggml.add_bos_token = False; transformers' GGUF conversion adds a BOS
        # anyway, so special tokens are switched off here to follow the file (and llama.cpp).
        ids = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0]
            gen = model.generate(ids, max_new_tokens=8, do_sample=False)[0, ids.shape[1]:]
        top = torch.topk(logits[-1], 10)
        ref["prompts"].append({
            "text": prompt, "ids": ids[0].tolist(),
            "logits_head": t2j(logits[:, :256]),  # every position, first 256 vocabulary entries
            "last_top_ids": top.indices.tolist(), "last_top_logits": [float(x) for x in top.values],
            "greedy_ids": gen.tolist(), "greedy_text": tok.decode(gen),
        })
    (OUT / "smollm2_reference.json").write_text(json.dumps(ref))


PEFT_OUT = ROOT / "crates" / "ptune-prompt" / "tests" / "fixtures" / "peft"


def peft_methods(task):
    from peft import PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig
    return {
        "prompt-tuning": PromptTuningConfig(task_type=task, num_virtual_tokens=4),
        "p-tuning-mlp": PromptEncoderConfig(task_type=task, num_virtual_tokens=4,
                                            encoder_reparameterization_type="MLP", encoder_hidden_size=16),
        "p-tuning-lstm": PromptEncoderConfig(task_type=task, num_virtual_tokens=4,
                                             encoder_reparameterization_type="LSTM", encoder_hidden_size=16),
        "prefix-tuning": PrefixTuningConfig(task_type=task, num_virtual_tokens=4, prefix_projection=True,
                                            encoder_hidden_size=16),
        "p-tuning-v2": PrefixTuningConfig(task_type=task, num_virtual_tokens=4, prefix_projection=False),
    }


def tiny_base(model):
    from transformers import BertForSequenceClassification
    if model == "bert":
        return BertForSequenceClassification.from_pretrained(OUT / "tiny-bert", num_labels=2,
                                                             attn_implementation="eager")
    return LlamaForCausalLM.from_pretrained(OUT / "tiny-llama", attn_implementation="eager")


def tiny_inputs(model):
    g = torch.Generator().manual_seed(20)
    vocab, seq = (120, 7) if model == "bert" else (128, 6)
    ids = torch.randint(1, vocab, (2, seq), generator=g)
    mask = torch.ones(2, seq, dtype=torch.long)
    mask[1, seq - 2:] = 0
    return ids, mask


def peft_adapters():
    from peft import TaskType, get_peft_model
    from safetensors.torch import save_file
    import peft
    assert peft.__version__ == "0.21.2", peft.__version__
    for model in ["bert", "llama"]:
        task = TaskType.SEQ_CLS if model == "bert" else TaskType.CAUSAL_LM
        for i, (method, cfg) in enumerate(peft_methods(task).items()):
            torch.manual_seed(100 + i)
            base = tiny_base(model)
            m = get_peft_model(base, cfg).eval()
            d = PEFT_OUT / f"{model}-{method}"
            m.save_pretrained(d)
            conf = json.loads((d / "adapter_config.json").read_text())
            conf["base_model_name_or_path"] = f"tiny-{model}"
            (d / "adapter_config.json").write_text(json.dumps(conf, indent=2, sort_keys=True))
            enc = {k: v.contiguous() for k, v in m.prompt_encoder["default"].state_dict().items()}
            save_file(enc, d / "encoder.safetensors")
            ids, mask = tiny_inputs(model)
            with torch.no_grad():
                logits = m(input_ids=ids, attention_mask=mask).logits
            (d / "reference.json").write_text(json.dumps({
                "input_ids": ids2j(ids), "attention_mask": ids2j(mask), "logits": t2j(logits),
            }))
            (d / "README.md").unlink(missing_ok=True)


def roundtrip():
    """Loads the adapters ptune saved (target/ptune-adapters/<model>-<method>/) in PEFT and checks PEFT
    computes the logits ptune computed (ptune_logits.json beside each)."""
    from peft import PeftModel
    src = ROOT / "target" / "ptune-adapters"
    report = {}
    for d in sorted(p for p in src.iterdir() if p.is_dir()):
        model = d.name.split("-")[0]
        spec = json.loads((d / "ptune_spec.json").read_text())
        if spec["layers"] and len(spec["layers"]) != json.loads((d / "adapter_config.json").read_text())["num_layers"]:
            report[d.name] = "prefix on a subset of layers: ptune-only (PEFT's prompt_embeddings covers every layer)"
            continue
        ours = json.loads((d / "ptune_logits.json").read_text())
        peft_model = PeftModel.from_pretrained(tiny_base(model), d).eval()
        ids, mask = tiny_inputs(model)
        with torch.no_grad():
            logits = peft_model(input_ids=ids, attention_mask=mask).logits
        expected = torch.tensor(ours["data"]).reshape(ours["shape"])
        assert logits.shape == expected.shape, (d.name, logits.shape, expected.shape)
        if model == "llama":
            virtual = logits.shape[1] - mask.shape[1]
            full = torch.cat([torch.ones(mask.shape[0], virtual, dtype=torch.long), mask], 1)
            valid = full.bool().unsqueeze(-1).expand_as(logits)
        else:
            valid = torch.ones_like(logits).bool()
        diff = (logits - expected).abs()[valid].max().item()
        report[d.name] = diff
        print(f"{d.name}: PEFT vs ptune max |diff| = {diff:.3e}")
        assert diff < 1e-5, d.name
    (PEFT_OUT / "roundtrip_report.json").write_text(json.dumps(report, indent=2, sort_keys=True))


if __name__ == "__main__":
    import sys
    OUT.mkdir(parents=True, exist_ok=True)
    PEFT_OUT.mkdir(parents=True, exist_ok=True)
    steps = {"tiny_bert": tiny_bert, "tiny_bert_tokenizer": tiny_bert_tokenizer, "tiny_llama": tiny_llama, "tiny_roberta": tiny_roberta,
             "tiny_qwen2": tiny_qwen2, "minilm": minilm, "smollm2": smollm2,
             "peft_adapters": peft_adapters, "roundtrip": roundtrip}
    for name in sys.argv[1:] or [k for k in steps if k != "roundtrip"]:
        steps[name]()
    print("wrote", sorted(p.name for p in OUT.iterdir()))
