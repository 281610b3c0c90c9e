"""A GGUF file's embedded tokenizer, built from its metadata with the ``tokenizers`` library.

transformers reads a GGUF tokenizer through its PyTorch GGUF utilities; this module builds the
same tokenizer from the metadata :class:`~sri_jax.weights.gguf_io.GGUFFile` has already
parsed, without PyTorch, and wraps it in ``transformers.PreTrainedTokenizerFast`` with the
file's chat template and special tokens. The oracle is transformers' own GGUF tokenizer
(tests/test_gguf_tokenizer.py: identical ids on a few hundred strings and chat prompts).

Supported ``tokenizer.ggml.model`` values:

* ``gpt2``: byte-level BPE (SmolLM2, Qwen2.5, Llama-3). The vocabulary and merges are stored;
  ``tokenizer.ggml.pre`` names the split regex the merges were learned with (:data:`SPLITS`;
  another value keeps GPT-2's, as transformers does).
* ``llama`` in a ``gemma3`` file: Gemma's SentencePiece-style BPE with byte fallback. The file
  stores no merges; they are rebuilt from the vocabulary, best first in file order (Gemma's
  scores do not follow its merge order), and tokens of two or more real spaces are respelled
  with "▁" so the merges built from them match.

:func:`supported` says whether a file is one of these; other files keep transformers' path.
"""

from __future__ import annotations

from typing import Optional

__all__ = ["SPLITS", "supported", "build_gguf_tokenizer"]

_CONTROL, _USER_DEFINED = 3, 4  # tokenizer.ggml.token_type values

_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# tokenizer.ggml.pre -> split regex (llama.cpp's names)
SPLITS: dict[str, str] = {"qwen2": _QWEN2_SPLIT, "llama-bpe": _LLAMA3_SPLIT,
                          "llama3": _LLAMA3_SPLIT, "llama-v3": _LLAMA3_SPLIT}


def supported(metadata: dict) -> bool:
    """Whether :func:`build_gguf_tokenizer` builds this file's tokenizer."""
    kind = metadata.get("tokenizer.ggml.model")
    return "tokenizer.ggml.tokens" in metadata and (
        kind == "gpt2" or kind == "llama" and metadata.get("general.architecture") == "gemma3")


def _byte_alphabet() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in keep]
    return {b: chr(b) for b in keep} | {b: chr(256 + i) for i, b in enumerate(extra)}


def _byte_level(tokens: list[str], merges: list[str], pre: Optional[str]):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    spell = _byte_alphabet()
    alphabet = set(spell.values())
    vocab = {t if set(t) <= alphabet else "".join(spell[b] for b in t.encode("utf-8")): i
             for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split(" ")) for m in merges],
                               dropout=None, continuing_subword_prefix="",
                               end_of_word_suffix="", fuse_unk=False))
    split = SPLITS.get(pre)
    tok.pre_tokenizer = (pre_tokenizers.ByteLevel(add_prefix_space=False) if split is None else
                         pre_tokenizers.Sequence([
                             pre_tokenizers.Split(Regex(split), behavior="isolated"),
                             pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                      use_regex=False)]))
    tok.decoder = decoders.ByteLevel()
    return tok, alphabet


def _merges_from_order(vocab: dict[str, int], rank: dict[str, int]) -> list[tuple[str, str]]:
    """Every split of a token into two vocabulary tokens, best first: by the merged token's
    ``rank`` (lower first), then the longer left piece, then the longer right piece."""
    found = []
    for token, r in rank.items():
        local = [(token[:i], token[i:]) for i in range(1, len(token))
                 if token[:i] in vocab and token[i:] in vocab]
        local.sort(key=lambda lr: (vocab[lr[0]], vocab[lr[1]]))
        found.extend((r, -len(left), -len(right), left, right) for left, right in local)
    found.sort(key=lambda x: x[:3])  # stable: ties keep the per-token order above
    return [(left, right) for _, _, _, left, right in found]


def _gemma(tokens: list[str], unk: str):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    tokens = ["▁" * len(t) if " " in t and not t.strip() else t for t in tokens]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=_merges_from_order(vocab, vocab),
                               fuse_unk=True, unk_token=unk, dropout=None, byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="merged_with_previous",
                                             invert=False)
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse()])
    return tok, None


def build_gguf_tokenizer(metadata: dict):
    """``transformers.PreTrainedTokenizerFast`` for a GGUF file's metadata (see
    :func:`supported`): vocabulary, merges, control tokens as special tokens, user-defined
    tokens as added tokens, bos/eos/unk/pad, ``add_bos_token`` / ``add_eos_token`` and the
    chat template."""
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    if not supported(metadata):
        raise ValueError(f"tokenizer.ggml.model {metadata.get('tokenizer.ggml.model')!r} of a "
                         f"{metadata.get('general.architecture')!r} file is not built here")
    tokens = list(metadata["tokenizer.ggml.tokens"])
    kind = metadata["tokenizer.ggml.model"]
    special = {name: tokens[metadata[f"tokenizer.ggml.{key}"]]
               for name, key in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"),
                                 ("unk_token", "unknown_token_id"),
                                 ("pad_token", "padding_token_id"))
               if metadata.get(f"tokenizer.ggml.{key}") is not None}
    if kind == "gpt2":
        backend, alphabet = _byte_level(tokens, metadata.get("tokenizer.ggml.merges", []),
                                        metadata.get("tokenizer.ggml.pre"))
    else:
        backend, alphabet = _gemma(tokens, special.get("unk_token", "<unk>"))
        if "<mask>" in tokens:  # transformers' GemmaTokenizer names it
            special.setdefault("mask_token", "<mask>")
    options = {k: bool(metadata[f"tokenizer.ggml.{k}"]) for k in ("add_bos_token", "add_eos_token")
               if f"tokenizer.ggml.{k}" in metadata}
    if kind == "llama":  # llama.cpp adds BOS to a SentencePiece vocabulary unless told not to
        options.setdefault("add_bos_token", True)
    types = metadata.get("tokenizer.ggml.token_type") or ()
    # A control token outside the byte alphabet of a byte-level vocabulary is a llama.cpp
    # mislabel: adding it would grow the vocabulary past the model's.
    backend.add_special_tokens([
        AddedToken(t, normalized=False, special=True) for t, k in zip(tokens, types)
        if k == _CONTROL and (alphabet is None or set(t) <= alphabet)])
    vocab = backend.get_vocab(with_added_tokens=True)
    backend.add_tokens([AddedToken(t, normalized=False, special=False)
                        for t, k in zip(tokens, types) if k == _USER_DEFINED and t in vocab])
    template = metadata.get("tokenizer.chat_template")
    return PreTrainedTokenizerFast(tokenizer_object=backend, **special, **options,
                                   **({"chat_template": template} if template else {}))
