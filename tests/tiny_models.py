"""Tiny random models in the HF / sentence-transformers / model2vec layouts, for fast tests.

Each generator writes one model directory (fixed seed, tens of milliseconds) and returns its path.
They share one small WordPiece vocabulary: special tokens, every lowercase letter and digit (whole
and as a ``##`` continuation, so any ASCII word tokenizes without ``[UNK]``) and a few hundred
common English words, so that ordinary sentences give realistic token counts.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789")
PUNCT = list(".,;:!?'\"()-/")
WORDS = """
the of and to a in is it you that he was for on are with as his they be at one have this from
or had by word but what some we can out other were all there when up use your how said an each
she which do their time if will way about many then them write would like so these her long make
thing see him two has look more day could go come did number sound no most people my over know
water than call first who may down side been now find any new work part take get place made live
where after back little only round man year came show every good me give our under name very
through just form sentence great think say help low line differ turn cause much mean before move
right boy old too same tell does set three want air well also play small end put home read hand
port large spell add even land here must big high such follow act why ask men change went light
kind off need house picture try us again animal point mother world near build self earth father
model text vector search query document embedding rank score fast slow quick brown fox jumps lazy
dog paris capital france city river language data file system memory process worker request
""".split()
SEED = 1234


def vocabulary() -> list[str]:
    seen: dict[str, None] = {}
    for token in [*SPECIAL, *CHARS, *PUNCT, *(f"##{c}" for c in CHARS), *WORDS]:
        seen.setdefault(token, None)
    return list(seen)


def build_tokenizer(*, special_tokens: bool = True) -> "tokenizers.Tokenizer":  # noqa: F821
    """A BERT-style WordPiece tokenizer over ``vocabulary()``; with [CLS]/[SEP] when asked."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece

    vocab = {token: i for i, token in enumerate(vocabulary())}
    tokenizer = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=None)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    if special_tokens:
        cls, sep = vocab["[CLS]"], vocab["[SEP]"]
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
        )
    tokenizer.add_special_tokens(SPECIAL)
    return tokenizer


def _quiet_transformers() -> None:
    # save_pretrained draws a progress bar per call; in a test log that is only noise
    from transformers.utils import logging

    logging.disable_progress_bar()


def _write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


def _write_hf_tokenizer(out: Path, max_length: int) -> None:
    build_tokenizer().save(str(out / "tokenizer.json"))
    _write_json(out / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_length, "do_lower_case": True,
        "model_input_names": ["input_ids", "token_type_ids", "attention_mask"],
        "unk_token": "[UNK]", "pad_token": "[PAD]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]",
    })  # fmt: skip
    _write_json(out / "special_tokens_map.json", {"unk_token": "[UNK]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                                                   "sep_token": "[SEP]", "mask_token": "[MASK]"})  # fmt: skip


def bert_config(max_length: int, **extra: object) -> "transformers.BertConfig":  # noqa: F821
    from transformers import BertConfig

    return BertConfig(vocab_size=len(vocabulary()), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=max_length, type_vocab_size=2, pad_token_id=0,
                      **extra)  # fmt: skip


def make_tiny_transformer(dir: Path, *, max_length: int = 128, pooling: str | list[str] = "mean",
                          normalize: bool = True, seed: int = SEED) -> Path:  # fmt: skip
    """A 2-layer, hidden-32 BERT encoder with sentence-transformers modules (pooling, Normalize)."""
    import torch
    from transformers import BertModel

    _quiet_transformers()
    out = Path(dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    BertModel(bert_config(max_length)).eval().save_pretrained(out)
    _write_hf_tokenizer(out, max_length)
    kinds = ["Transformer", "Pooling", *(["Normalize"] if normalize else [])]
    paths = {"Transformer": "", "Pooling": "1_Pooling", "Normalize": "2_Normalize"}
    modules = [{"idx": i, "name": str(i), "path": paths[k], "type": f"sentence_transformers.models.{k}"}
               for i, k in enumerate(kinds)]  # fmt: skip
    if normalize:
        (out / "2_Normalize").mkdir(exist_ok=True)
    _write_json(out / "modules.json", modules)
    _write_json(out / "1_Pooling" / "config.json", {"embedding_dimension": 32, "pooling_mode": pooling})
    _write_json(out / "sentence_bert_config.json", {"max_seq_length": max_length, "do_lower_case": False})
    return out


def make_tiny_static(dir: Path, *, dim: int = 16, normalize: bool = True, seed: int = SEED) -> Path:
    """A model2vec-layout static model: one random float32 vector per vocabulary token."""
    from safetensors.numpy import save_file

    out = Path(dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((len(vocabulary()), dim)).astype(np.float32)
    save_file({"embeddings": vectors}, str(out / "model.safetensors"))
    build_tokenizer(special_tokens=False).save(str(out / "tokenizer.json"))
    _write_json(out / "config.json", {"model_type": "model2vec", "architectures": ["StaticModel"],
                                      "hidden_dim": dim, "normalize": normalize, "pooling": "mean"})  # fmt: skip
    return out


def make_tiny_cross_encoder(dir: Path, *, max_length: int = 128, seed: int = SEED) -> Path:
    """A 2-layer, hidden-32 BertForSequenceClassification with one label (a relevance logit)."""
    import torch
    from transformers import BertForSequenceClassification

    _quiet_transformers()
    out = Path(dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    BertForSequenceClassification(bert_config(max_length, num_labels=1)).eval().save_pretrained(out)
    _write_hf_tokenizer(out, max_length)
    return out
