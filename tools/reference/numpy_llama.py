"""An independent NumPy forward pass of a llama-architecture GGUF.

The weights are dequantized with the `gguf` package (exact: every quantized
value becomes the float it stands for) and all arithmetic runs in float64, so
the logits are the model's exact math (dtype=np.float32 gives the same
pass in single precision, to measure how far plain f32 rounding moves them), free of the activation quantization
llama.cpp applies inside its quantized matmuls.

The architecture, as llama.cpp runs GGUFs with general.architecture=llama:

* x = token_embd[ids]
* per block: h = x + Wo * attn(rope(Wq * rmsnorm(x) * g_attn), rope(Wk ...), Wv ...)
             x = h + Wdown * (silu(Wgate * n) * (Wup * n)),  n = rmsnorm(h) * g_ffn
* logits = output * (rmsnorm(x) * g_out), output = token_embd when the GGUF
  has no output.weight (tied embeddings).
* RoPE rotates adjacent pairs (x[2i], x[2i+1]) by pos * base^(-2i/rope_dim):
  llama.cpp's "normal" rope. The HF->GGUF converter permutes the rows of
  Wq and Wk so this equals HF's rotate-half rope on the original weights.
  `rope_style="neox"` (rotate halves) exists only to show it does NOT match.
* Grouped-query attention: query head h reads kv head h // (n_head / n_head_kv),
  scores scaled by 1/sqrt(head_dim), causal mask.

`llama_cpp_rounding=True` adds the roundings llama.cpp's CPU path makes
(without flash attention, f16 KV cache): every matmul input quantized to 8
bits per block of 32 with an f16 scale (Q8_0/Q8_1 activations), q, k, v and
the attention probabilities rounded to f16. It is not bit-exact with
llama.cpp (rounding modes and summation orders differ); it shows how far
such roundings alone move the logits, which is what justifies the tolerance
between llama.cpp and the exact pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


@dataclass
class Hparams:
    """Model dimensions read from the GGUF metadata."""

    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_vocab: int
    rms_eps: float
    rope_base: float
    rope_dim: int

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


@dataclass
class Layer:
    attn_norm: np.ndarray
    wq: np.ndarray
    wk: np.ndarray
    wv: np.ndarray
    wo: np.ndarray
    ffn_norm: np.ndarray
    w_gate: np.ndarray
    w_up: np.ndarray
    w_down: np.ndarray


@dataclass
class KvCache:
    """Keys and values per layer, shape (n_head_kv, positions, head_dim)."""

    k: list[np.ndarray] = field(default_factory=list)
    v: list[np.ndarray] = field(default_factory=list)

    @property
    def n_past(self) -> int:
        return 0 if not self.k else self.k[0].shape[1]


def _field(reader: GGUFReader, key: str, default=None):
    f = reader.fields.get(key)
    if f is None:
        if default is None:
            raise KeyError(f"GGUF metadata key {key} is missing")
        return default
    return f.contents()


class NumpyLlama:
    """Loads every tensor of a llama GGUF as float64 and runs it exactly."""

    def __init__(self, path: str, rope_style: str = "norm", dtype=np.float64, llama_cpp_rounding: bool = False):
        if rope_style not in ("norm", "neox"):
            raise ValueError(f"unknown rope style {rope_style}")
        self.rope_style = rope_style
        self.llama_cpp_rounding = llama_cpp_rounding
        self.dtype = np.dtype(dtype)
        reader = GGUFReader(path)
        arch = _field(reader, "general.architecture")
        if arch != "llama":
            raise ValueError(f"architecture {arch!r} is not llama")
        n_embd = int(_field(reader, "llama.embedding_length"))
        n_head = int(_field(reader, "llama.attention.head_count"))
        tensors = {t.name: t for t in reader.tensors}

        def weight(name: str) -> np.ndarray:
            t = tensors[name]
            # GGUF lists dims fastest-first; NumPy wants them reversed.
            shape = tuple(int(d) for d in reversed(t.shape))
            return np.asarray(dequantize(t.data, t.tensor_type), dtype=self.dtype).reshape(shape)

        self.tok_embd = weight("token_embd.weight")
        self.hp = Hparams(
            n_layer=int(_field(reader, "llama.block_count")),
            n_embd=n_embd,
            n_head=n_head,
            n_head_kv=int(_field(reader, "llama.attention.head_count_kv", n_head)),
            n_ff=int(_field(reader, "llama.feed_forward_length")),
            n_vocab=self.tok_embd.shape[0],
            rms_eps=float(_field(reader, "llama.attention.layer_norm_rms_epsilon")),
            rope_base=float(_field(reader, "llama.rope.freq_base", 10000.0)),
            rope_dim=int(_field(reader, "llama.rope.dimension_count", n_embd // n_head)),
        )
        self.output_norm = weight("output_norm.weight")
        self.tied_embeddings = "output.weight" not in tensors
        self.output = self.tok_embd if self.tied_embeddings else weight("output.weight")
        self.layers = [
            Layer(
                attn_norm=weight(f"blk.{i}.attn_norm.weight"),
                wq=weight(f"blk.{i}.attn_q.weight"),
                wk=weight(f"blk.{i}.attn_k.weight"),
                wv=weight(f"blk.{i}.attn_v.weight"),
                wo=weight(f"blk.{i}.attn_output.weight"),
                ffn_norm=weight(f"blk.{i}.ffn_norm.weight"),
                w_gate=weight(f"blk.{i}.ffn_gate.weight"),
                w_up=weight(f"blk.{i}.ffn_up.weight"),
                w_down=weight(f"blk.{i}.ffn_down.weight"),
            )
            for i in range(self.hp.n_layer)
        ]

    # --- building blocks -------------------------------------------------

    def q8(self, x: np.ndarray) -> np.ndarray:
        """Matmul input as llama.cpp quantizes it (identity unless llama_cpp_rounding)."""
        if not self.llama_cpp_rounding:
            return x
        blocks = x.reshape(-1, 32).astype(np.float32)
        d = np.abs(blocks).max(axis=1, keepdims=True) / np.float32(127)
        inv = np.divide(np.float32(1), d, out=np.zeros_like(d), where=d > 0)
        q = np.round(blocks * inv)
        return (q * d.astype(np.float16).astype(self.dtype)).reshape(x.shape).astype(self.dtype)

    def f16(self, x: np.ndarray) -> np.ndarray:
        """x rounded to f16 (identity unless llama_cpp_rounding)."""
        if not self.llama_cpp_rounding:
            return x
        return x.astype(np.float16).astype(self.dtype)

    def rms_norm(self, x: np.ndarray, gain: np.ndarray) -> np.ndarray:
        ms = np.mean(x * x, axis=-1, keepdims=True)
        return x / np.sqrt(ms + self.hp.rms_eps) * gain

    def rope(self, x: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Rotates x of shape (T, heads, head_dim) by its positions."""
        d = self.hp.rope_dim
        inv_freq = self.hp.rope_base ** (-np.arange(0, d, 2, dtype=np.float64) / d)
        angle = positions[:, None].astype(np.float64) * inv_freq[None, :]  # (T, d/2)
        cos = np.cos(angle)[:, None, :].astype(self.dtype)
        sin = np.sin(angle)[:, None, :].astype(self.dtype)
        out = x.copy()
        if self.rope_style == "norm":
            x0, x1 = x[..., 0:d:2], x[..., 1:d:2]
            out[..., 0:d:2] = x0 * cos - x1 * sin
            out[..., 1:d:2] = x0 * sin + x1 * cos
        else:
            half = d // 2
            x0, x1 = x[..., :half], x[..., half:d]
            out[..., :half] = x0 * cos - x1 * sin
            out[..., half:d] = x0 * sin + x1 * cos
        return out

    def block(self, i: int, x: np.ndarray, positions: np.ndarray, cache: KvCache) -> np.ndarray:
        """Runs block i on hidden states x (T, n_embd), appending to its KV cache."""
        hp, layer = self.hp, self.layers[i]
        t, hd = x.shape[0], hp.head_dim
        n = self.q8(self.rms_norm(x, layer.attn_norm))
        q = self.f16(self.rope((n @ layer.wq.T).reshape(t, hp.n_head, hd), positions))
        k = self.f16(self.rope((n @ layer.wk.T).reshape(t, hp.n_head_kv, hd), positions))
        v = self.f16((n @ layer.wv.T).reshape(t, hp.n_head_kv, hd))
        k, v = k.transpose(1, 0, 2), v.transpose(1, 0, 2)  # (kv heads, T, hd)
        if len(cache.k) <= i:
            cache.k.append(k)
            cache.v.append(v)
        else:
            cache.k[i] = np.concatenate([cache.k[i], k], axis=1)
            cache.v[i] = np.concatenate([cache.v[i], v], axis=1)
        keys, values = cache.k[i], cache.v[i]
        n_kv = keys.shape[1]
        key_pos = np.arange(n_kv)
        mask = np.where(key_pos[None, :] <= positions[:, None], 0.0, -np.inf).astype(self.dtype)  # (T, n_kv)
        group = hp.n_head // hp.n_head_kv
        attn = np.empty((t, hp.n_head, hd), dtype=self.dtype)
        for h in range(hp.n_head):
            kvh = h // group
            scores = q[:, h, :] @ keys[kvh].T / self.dtype.type(np.sqrt(hd)) + mask
            scores -= scores.max(axis=-1, keepdims=True)
            p = np.exp(scores)
            p /= p.sum(axis=-1, keepdims=True)
            attn[:, h, :] = self.f16(p) @ values[kvh]
        h_out = x + self.q8(attn.reshape(t, hp.n_embd)) @ layer.wo.T
        n = self.q8(self.rms_norm(h_out, layer.ffn_norm))
        gate = n @ layer.w_gate.T
        up = n @ layer.w_up.T
        silu = gate / (1.0 + np.exp(-gate))
        return h_out + self.q8(silu * up) @ layer.w_down.T

    # --- whole model -----------------------------------------------------

    def forward(self, ids: list[int], cache: KvCache, record: list[int] | None = None):
        """Feeds ids after the cached positions.

        Returns (logits of every new position (T, n_vocab), recorded), where
        recorded maps a block boundary b (hidden state entering block b; b =
        n_layer is the last block's output) and "final_norm" to the last
        position's hidden state, for the boundaries listed in `record`.
        """
        if not ids:
            raise ValueError("forward needs at least one token")
        positions = np.arange(cache.n_past, cache.n_past + len(ids))
        x = self.tok_embd[np.asarray(ids)]
        recorded: dict = {}
        record = record or []
        for i in range(self.hp.n_layer):
            if i in record:
                recorded[i] = x[-1].copy()
            x = self.block(i, x, positions, cache)
        if self.hp.n_layer in record:
            recorded[self.hp.n_layer] = x[-1].copy()
        x = self.rms_norm(x, self.output_norm)
        if record:
            recorded["final_norm"] = x[-1].copy()
        return self.q8(x) @ self.output.T, recorded
