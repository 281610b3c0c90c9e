"""The torch-free GGUF tokenizer (sri_jax.weights.gguf_tokenizer) against transformers' own
GGUF tokenizer (``AutoTokenizer.from_pretrained(dir, gguf_file=...)``, the oracle): identical
ids on a few hundred varied strings (unicode, code, whitespace runs, special tokens) with and
without special tokens, identical chat-templated prompts and their ids, identical decoding and
special tokens, for a tiny GGUF written here and every real GGUF in the cache."""

import random
from pathlib import Path

import gguf
import numpy as np
import pytest

from sri_jax.weights.gguf_io import GGUFFile, load_gguf_tokenizer
from sri_jax.weights.gguf_tokenizer import build_gguf_tokenizer, supported

CACHED = ["SmolLM2-135M-Instruct.Q4_1.gguf", "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf",
          "gemma-3-270m-q4_k_m.gguf"]
SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<bos>", "<eos>",
            "<start_of_turn>", "<end_of_turn>", "<think>", "</think>"]
BASE = [
    "Hello world", " Hello  world ", "\n\n\tindented\n", "   ", "", "a" * 60, "x\r\ny",
    "def f(x):\n    return x ** 2  # square\n", "SELECT * FROM t WHERE a <> 1;",
    "for (int i = 0; i < n; ++i) { s += a[i]; }", "I'm sure you're right, we'LL see",
    "日本語のテキストと中文", "emoji 🤖👍🏽 ok", "naïve café", "e\u0301 combining", "مرحبا بالعالم",
    "ŁÓDŹ żółć", "\u00a0nbsp\u2003em space", "\u200bzero width", "tab\t\t tab", "1234567890123",
    "3.14159e-10", "<|im_start|>user\nhi<|im_end|>\n", "<bos>x<eos>", "<think>hm</think>",
    "<start_of_turn>user\nHi<end_of_turn>\n", "How do I make a cake?",
]


def varied_strings(n: int = 300, seed: int = 0) -> list[str]:
    """BASE plus seeded random mixtures of letters, digits, punctuation, whitespace runs,
    accented / CJK / emoji characters and special-token strings."""
    rng = random.Random(seed)
    pool = list("abcXYZ 019 \n\t.,;:'\"()[]{}<>|_-+=*/\\#@!?éüß日本中文🤖😀αβγ") + SPECIALS + \
        ["  ", "\n\n", "    ", "\t\t"]
    return BASE + ["".join(rng.choice(pool) for _ in range(rng.randint(1, 40)))
                   for _ in range(n - len(BASE))]


def assert_same_tokenizer(mine, ref):
    strings = varied_strings()
    for special in (True, False):
        got = mine(strings, add_special_tokens=special)["input_ids"]
        want = ref(strings, add_special_tokens=special)["input_ids"]
        diff = [s for s, a, b in zip(strings, got, want) if a != b]
        assert not diff, f"{len(diff)} strings differ (add_special_tokens={special}): {diff[:5]}"
    ids = ref(strings[:80])["input_ids"]
    assert mine.batch_decode(ids) == ref.batch_decode(ids)
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id",
                 "all_special_ids", "chat_template", "add_bos_token", "special_tokens_map"):
        assert getattr(mine, attr) == getattr(ref, attr), attr
    assert len(mine) == len(ref)
    assert {i: repr(t) for i, t in mine.added_tokens_decoder.items()} == \
        {i: repr(t) for i, t in ref.added_tokens_decoder.items()}
    if ref.chat_template is None:
        return
    for s in strings[:40]:
        for conv in ([{"role": "user", "content": s}],
                     [{"role": "system", "content": "You are a helpful assistant."},
                      {"role": "user", "content": s}, {"role": "assistant", "content": s[::-1]},
                      {"role": "user", "content": "And then?"}]):
            text = ref.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
            assert mine.apply_chat_template(conv, tokenize=False,
                                            add_generation_prompt=True) == text
            assert mine(text, add_special_tokens=False)["input_ids"] == \
                ref(text, add_special_tokens=False)["input_ids"]


def _oracle(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def _byte_alphabet() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes (written out independently)."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    extra = [b for b in range(256) if b not in keep]
    out = {b: chr(b) for b in keep}
    out.update({b: chr(256 + i) for i, b in enumerate(extra)})
    return [out[b] for b in range(256)]


TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
            "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def tiny_tokenizer_gguf(tmp_path_factory):
    """A qwen2-arch GGUF whose only content is a small byte-level BPE tokenizer: merges, two
    control tokens, a user-defined token, a control token mislabelled outside the byte
    alphabet (must be skipped) and a token stored in plain UTF-8 (respelled in bytes)."""
    path = tmp_path_factory.mktemp("tok") / "tiny-tok.gguf"
    merges = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "o r", "e r", "Ġ Ġ", "ĠĠ ĠĠ", "r e",
              "Ġ w", "Ġw or", "l d", "Ġwor ld", "1 2", "( )", "æ Ĺ", "æĹ ¥"]
    pieces = sorted({p for m in merges for p in m.split(" ")} | {m.replace(" ", "")
                                                                  for m in merges})
    tokens = _byte_alphabet() + [p for p in pieces if p not in _byte_alphabet()]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "<ctrl★>", "本語"]
    types = [1] * len(tokens) + [3, 3, 3, 4, 3, 1]
    tokens += specials
    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_context_length(64)
    w.add_embedding_length(8)
    w.add_block_count(1)
    w.add_feed_forward_length(16)
    w.add_head_count(2)
    w.add_head_count_kv(1)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(tokens.index("<|endoftext|>"))
    w.add_eos_token_id(tokens.index("<|im_end|>"))
    w.add_pad_token_id(tokens.index("<|endoftext|>"))
    w.add_add_bos_token(False)
    w.add_chat_template(TEMPLATE)
    w.add_tensor("token_embd.weight", np.zeros((len(tokens), 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_tiny_gguf_tokenizer_equals_transformers(tiny_tokenizer_gguf):
    meta = GGUFFile(tiny_tokenizer_gguf).metadata
    mine = build_gguf_tokenizer(meta)
    assert_same_tokenizer(mine, _oracle(tiny_tokenizer_gguf))
    # hand-checked: merges apply, control / user-defined tokens stay whole, the mislabelled
    # control token is split into bytes, the UTF-8 token is found by its byte spelling
    vocab = mine.get_vocab()
    assert mine("the world<|im_end|><think>", add_special_tokens=False)["input_ids"] == [
        vocab["t"], vocab["he"], vocab["Ġworld"], vocab["<|im_end|>"], vocab["<think>"]]
    assert "<ctrl★>" not in mine.all_special_tokens
    assert mine("日本", add_special_tokens=False)["input_ids"] == [vocab["æĹ¥"], vocab["æ"],
                                                                  vocab["ľ"], vocab["¬"]]
    alphabet = _byte_alphabet()
    assert vocab["".join(alphabet[b] for b in "本語".encode())] == \
        meta["tokenizer.ggml.tokens"].index("本語")


def test_unsupported_tokenizer_kinds_keep_transformers():
    assert supported({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a"]})
    assert supported({"tokenizer.ggml.model": "llama", "general.architecture": "gemma3",
                      "tokenizer.ggml.tokens": ["a"]})
    assert not supported({"tokenizer.ggml.model": "llama", "general.architecture": "llama",
                          "tokenizer.ggml.tokens": ["a"]})  # SentencePiece Llama-2
    assert not supported({"tokenizer.ggml.model": "gpt2"})  # no vocabulary
    with pytest.raises(ValueError, match="'t5'"):
        build_gguf_tokenizer({"tokenizer.ggml.model": "t5", "tokenizer.ggml.tokens": ["a"]})


@pytest.mark.slow
@pytest.mark.parametrize("name", CACHED)
def test_real_gguf_tokenizer_equals_transformers(name):
    from sri_jax.weights import registry

    path = registry.cache_dir() / "models" / name
    if not path.is_file():
        pytest.skip(f"{name} is not cached")
    assert_same_tokenizer(load_gguf_tokenizer(path), _oracle(path))


def test_gguf_tokenizer_needs_no_torch(tiny_tokenizer_gguf):
    """With PyTorch unimportable, load_gguf_tokenizer still builds the tokenizer and its chat
    prompt (the demo's install has no torch)."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None\n"
            "from sri_jax.weights.gguf_io import load_gguf_tokenizer\n"
            f"tok = load_gguf_tokenizer({str(tiny_tokenizer_gguf)!r})\n"
            "text = tok.apply_chat_template([{'role': 'user', 'content': 'the world'}],"
            " tokenize=False, add_generation_prompt=True)\n"
            "print(tok(text)['input_ids'])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    ref = _oracle(tiny_tokenizer_gguf)
    text = ref.apply_chat_template([{"role": "user", "content": "the world"}], tokenize=False,
                                   add_generation_prompt=True)
    assert out.stdout.strip() == str(ref(text)["input_ids"])
