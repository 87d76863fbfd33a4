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


# ---- one tiny model per architecture the transformer runtime serves ----------------------------
# Extra config fields per HF model_type over the shared tiny shape (2 layers, hidden 32, 2 heads).
# RoBERTa-style position ids start after the padding id, hence the 2 spare positions.
_ARCHITECTURES: dict[str, dict[str, object]] = {
    "bert": {"type_vocab_size": 2},
    "roberta": {"type_vocab_size": 1, "position_slack": 2},
    "xlm-roberta": {"type_vocab_size": 1, "position_slack": 2},
    "camembert": {"type_vocab_size": 1, "position_slack": 2},
    "distilbert": {},
    "electra": {"type_vocab_size": 2, "embedding_size": 32},
    "mpnet": {"position_slack": 2},
    "deberta-v2": {"type_vocab_size": 0, "relative_attention": True, "position_buckets": 16,
                   "pos_att_type": ["p2c", "c2p"]},  # fmt: skip
    "modernbert": {"global_attn_every_n_layers": 2, "local_attention": 16, "cls_token_id": 2, "sep_token_id": 3},
    "qwen2": {"num_key_value_heads": 1},
    "qwen3": {"num_key_value_heads": 1, "head_dim": 16},
    "gemma3_text": {"num_key_value_heads": 1, "head_dim": 16, "sliding_window": 16},
}
ARCHITECTURES = tuple(_ARCHITECTURES)
DECODERS = ("qwen2", "qwen3", "gemma3_text")  # causal models: last-token pooling, as their embedders use


def architecture_config(model_type: str, max_length: int) -> "transformers.PretrainedConfig":  # noqa: F821
    from transformers import CONFIG_MAPPING

    extra = dict(_ARCHITECTURES[model_type])
    positions = max_length + int(extra.pop("position_slack", 0))  # type: ignore[call-overload]
    if model_type == "distilbert":
        shape: dict[str, object] = {"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64}
    else:
        shape = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    ids = {"pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 3}  # [PAD], [CLS], [SEP]
    return CONFIG_MAPPING[model_type](vocab_size=len(vocabulary()), max_position_embeddings=positions,
                                      **shape, **ids, **extra)  # fmt: skip


def make_tiny_architecture(dir: Path, model_type: str, *, max_length: int = 64, pooling: str | list[str] | None = None,
                           normalize: bool = False, seed: int = SEED) -> Path:  # fmt: skip
    """A random 2-layer model of ``model_type`` (one of ``ARCHITECTURES``) with the shared WordPiece
    tokenizer and sentence-transformers modules; pooling defaults to mean for encoders and last
    token for decoders."""
    import torch
    from transformers import AutoModel

    _quiet_transformers()
    out = Path(dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    AutoModel.from_config(architecture_config(model_type, max_length)).eval().save_pretrained(out)
    _write_hf_tokenizer(out, max_length)
    # only BERT-style models take segment ids; the others' forward refuses them
    names = ["input_ids", "attention_mask", *(["token_type_ids"] if model_type in ("bert", "electra") else [])]
    config = json.loads((out / "tokenizer_config.json").read_text())
    _write_json(out / "tokenizer_config.json", {**config, "model_input_names": names})
    mode = pooling or ("lasttoken" if model_type in DECODERS else "mean")
    _write_sentence_modules(out, mode, normalize, max_length)
    return out


def _write_sentence_modules(out: Path, pooling: str | list[str], normalize: bool, max_length: int) -> None:
    kinds = ["Transformer", "Pooling", *(["Normalize"] if normalize else [])]
    paths = {"Transformer": "", "Pooling": "1_Pooling", "Normalize": "2_Normalize"}
    _write_json(out / "modules.json", [{"idx": i, "name": str(i), "path": paths[k],
                                        "type": f"sentence_transformers.models.{k}"} for i, k in enumerate(kinds)])  # fmt: skip
    if normalize:
        (out / "2_Normalize").mkdir(exist_ok=True)
    _write_json(out / "1_Pooling" / "config.json", {"embedding_dimension": 32, "pooling_mode": pooling})
    _write_json(out / "sentence_bert_config.json", {"max_seq_length": max_length, "do_lower_case": False})
