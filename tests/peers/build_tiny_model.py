"""Build a tiny random Llama that vLLM can serve on the CPU (no weights can be downloaded here).

Why this shape: a real Llama architecture and a real byte-level BPE tokenizer with a chat
template exercise vLLM exactly as a real model does (tokenising, chat templates, sampling,
structured output, usage counts); only the weights are random, so the text is noise.
head_dim is 32 (128 hidden / 4 heads): vLLM's CPU attention crashes on head_dim 16.
Everything is seeded, so two builds give the same files.

Run with the vLLM venv's python (it has torch, transformers, tokenizers):
    .peers/vllm-venv/bin/python tests/peers/build_tiny_model.py --out .peers/tiny-llama
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SEED = 1234
VOCAB = 1024
SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
           "<|eot_id|>", "<|pad|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|eot_id|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
WORDS = (
    "the a relay provider client job answer question model token stream price invoice paid "
    "lightning nostr event signature key pubkey request result feedback error status fast slow "
    "small large random text json field value number true false null list object name age city "
    "reason answer summary sentence word first second third is are was be can will should must "
    "not and or but if then when while for with from to of in on at by about over under "
    "hello world thanks please yes no maybe good bad new old one two three four five ten"
).split()
PUNCT = ["{", "}", "[", "]", ":", ",", '"', ".", "?", "!", "(", ")", "-", "'", "0", "1", "2", "3",
         "4", "5", "6", "7", "8", "9", "\n"]


def corpus(rng: random.Random, n_lines: int = 600) -> list[str]:
    """A few tens of KB of generated prose, JSON and chat-shaped lines (deterministic)."""
    lines = []
    for i in range(n_lines):
        kind = i % 3
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 14))]
        if kind == 0:
            lines.append(" ".join(words).capitalize() + rng.choice([".", "?", "!"]))
        elif kind == 1:
            obj = {rng.choice(WORDS): rng.choice([rng.choice(WORDS), rng.randint(0, 999), True, None])
                   for _ in range(rng.randint(1, 4))}
            lines.append(json.dumps(obj))
        else:
            lines.append(f"{rng.choice(['user', 'assistant', 'system'])}: {' '.join(words)} "
                         f"{''.join(rng.choice(PUNCT) for _ in range(3))}")
    return lines


def build(out: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    rng = random.Random(SEED)
    out.mkdir(parents=True, exist_ok=True)

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(rng), trainer=trainer)

    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
        pad_token="<|pad|>", model_max_length=512,
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    hf_tok.save_pretrained(out)

    config = LlamaConfig(
        vocab_size=len(hf_tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=512,
        bos_token_id=hf_tok.bos_token_id, eos_token_id=hf_tok.eos_token_id,
        pad_token_id=hf_tok.pad_token_id, tie_word_embeddings=False, rms_norm_eps=1e-5,
    )
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.save_pretrained(out, safe_serialization=True)
    print(f"tiny llama: {sum(p.numel() for p in model.parameters())} parameters, "
          f"vocab {len(hf_tok)}, written to {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    build(ap.parse_args().out)


if __name__ == "__main__":
    main()
