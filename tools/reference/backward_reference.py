#!/usr/bin/env python3
"""Reference gradients of a span of the default model's blocks.

Writes crates/model/tests/fixtures/backward_reference.json: for blocks
3..5 of SmolLM2-135M-Instruct (Q4_1), a sequence of 5 positions and one
deep prompt row per block,

* the inputs: hidden states x, the prompt rows, and r, the gradient of the
  loss L = sum(output * r) with respect to the span's output;
* the span's output;
* the gradients of L with respect to x and to each block's prompt row.

The forward is numpy_llama.py's exact float64 pass (weights dequantized by
the `gguf` package); the backward is written out by hand here, layer by
layer, in float64, independently of the Rust engine's. Before writing, the
script checks its own gradients against central finite differences in
float64 and stops if they disagree.

Run: python3 tools/reference/backward_reference.py [--model PATH]
Deterministic: same inputs, same file.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import refenv  # noqa: E402

refenv.ensure_venv()

import argparse  # noqa: E402

import numpy as np  # noqa: E402
from numpy_llama import NumpyLlama  # noqa: E402

FIRST, LAST = 3, 5
POSITIONS = 5
PROMPT_ROWS = 1
SEED = 20261204


def rms_forward(x, gain, eps):
    scale = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return x * scale * gain, scale


def rms_backward(x, scale, gain, dy):
    """dx_i = s g_i dy_i - x_i s^3 / w * sum_j dy_j g_j x_j."""
    w = x.shape[-1]
    dot = np.sum(dy * gain * x, axis=-1, keepdims=True)
    return scale * gain * dy - x * scale**3 * dot / w


def rope_tables(model, n):
    d = model.hp.rope_dim
    inv_freq = model.hp.rope_base ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    angle = np.arange(n)[:, None].astype(np.float64) * inv_freq[None, :]
    return np.cos(angle)[:, None, :], np.sin(angle)[:, None, :]


def rotate(x, cos, sin, inverse=False):
    """Adjacent-pair rotation of x (T, heads, d); inverse rotates back."""
    s = -sin if inverse else sin
    out = x.copy()
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out[..., 0::2] = x0 * cos - x1 * s
    out[..., 1::2] = x0 * s + x1 * cos
    return out


def block_forward(model, i, x):
    hp, layer = model.hp, model.layers[i]
    t, hd = x.shape[0], hp.head_dim
    group = hp.n_head // hp.n_head_kv
    cos, sin = rope_tables(model, t)
    n1, s1 = rms_forward(x, layer.attn_norm, hp.rms_eps)
    q = rotate((n1 @ layer.wq.T).reshape(t, hp.n_head, hd), cos, sin)
    k = rotate((n1 @ layer.wk.T).reshape(t, hp.n_head_kv, hd), cos, sin)
    v = (n1 @ layer.wv.T).reshape(t, hp.n_head_kv, hd)
    mask = np.where(np.arange(t)[None, :] <= np.arange(t)[:, None], 0.0, -np.inf)
    probs = np.empty((hp.n_head, t, t))
    attn = np.empty((t, hp.n_head, hd))
    for h in range(hp.n_head):
        scores = q[:, h, :] @ k[:, h // group, :].T / np.sqrt(hd) + mask
        scores -= scores.max(axis=-1, keepdims=True)
        p = np.exp(scores)
        p /= p.sum(axis=-1, keepdims=True)
        probs[h] = p
        attn[:, h, :] = p @ v[:, h // group, :]
    attn = attn.reshape(t, hp.n_embd)
    x1 = x + attn @ layer.wo.T
    n2, s2 = rms_forward(x1, layer.ffn_norm, hp.rms_eps)
    gate = n2 @ layer.w_gate.T
    up = n2 @ layer.w_up.T
    sig = 1.0 / (1.0 + np.exp(-gate))
    act = gate * sig * up
    y = x1 + act @ layer.w_down.T
    tape = dict(x=x, n1=n1, s1=s1, q=q, k=k, v=v, probs=probs, attn=attn,
                x1=x1, n2=n2, s2=s2, gate=gate, up=up, sig=sig)
    return y, tape


def block_backward(model, i, tape, dy):
    hp, layer = model.hp, model.layers[i]
    t, hd = dy.shape[0], hp.head_dim
    group = hp.n_head // hp.n_head_kv
    cos, sin = rope_tables(model, t)
    # MLP
    d_act = dy @ layer.w_down
    gate, sig, up = tape["gate"], tape["sig"], tape["up"]
    d_gate = d_act * up * sig * (1.0 + gate * (1.0 - sig))
    d_up = d_act * gate * sig
    d_n2 = d_gate @ layer.w_gate + d_up @ layer.w_up
    dx1 = dy + rms_backward(tape["x1"], tape["s2"], layer.ffn_norm, d_n2)
    # Attention
    d_attn = (dx1 @ layer.wo).reshape(t, hp.n_head, hd)
    q, k, v, probs = tape["q"], tape["k"], tape["v"], tape["probs"]
    dq = np.zeros_like(q)
    dk = np.zeros_like(k)
    dv = np.zeros_like(v)
    for h in range(hp.n_head):
        kv = h // group
        p = probs[h]
        dp = d_attn[:, h, :] @ v[:, kv, :].T
        dv[:, kv, :] += p.T @ d_attn[:, h, :]
        ds = p * (dp - np.sum(p * dp, axis=-1, keepdims=True)) / np.sqrt(hd)
        dq[:, h, :] += ds @ k[:, kv, :]
        dk[:, kv, :] += ds.T @ q[:, h, :]
    dq = rotate(dq, cos, sin, inverse=True).reshape(t, -1)
    dk = rotate(dk, cos, sin, inverse=True).reshape(t, -1)
    dv = dv.reshape(t, -1)
    d_n1 = dq @ layer.wq + dk @ layer.wk + dv @ layer.wv
    return dx1 + rms_backward(tape["x"], tape["s1"], layer.attn_norm, d_n1)


def span_forward(model, x, prompts):
    tapes = []
    for b, i in enumerate(range(FIRST, LAST)):
        x = x.copy()
        x[:PROMPT_ROWS] += prompts[b]
        x, tape = block_forward(model, i, x)
        tapes.append(tape)
    return x, tapes


def span_backward(model, tapes, dy):
    prompts = [None] * len(tapes)
    for b in reversed(range(len(tapes))):
        dy = block_backward(model, FIRST + b, tapes[b], dy)
        prompts[b] = dy[:PROMPT_ROWS].copy()
    return dy, prompts


def self_check(model, x, prompts, r, dx, dprompts):
    """Directional central differences in float64 must agree to 1e-6."""
    rng = np.random.default_rng(SEED + 1)
    eps = 1e-4
    for _ in range(3):
        vx = rng.uniform(-1, 1, x.shape)
        vp = [rng.uniform(-1, 1, p.shape) for p in prompts]
        plus, _ = span_forward(model, x + eps * vx, [p + eps * v for p, v in zip(prompts, vp)])
        minus, _ = span_forward(model, x - eps * vx, [p - eps * v for p, v in zip(prompts, vp)])
        numeric = (np.sum(plus * r) - np.sum(minus * r)) / (2 * eps)
        analytic = np.sum(dx * vx) + sum(np.sum(g * v) for g, v in zip(dprompts, vp))
        error = abs(numeric - analytic) / max(abs(numeric), 1e-12)
        refenv.log(f"finite differences: {numeric:.10g}, backward: {analytic:.10g}, relative {error:.2e}")
        if error > 1e-6:
            sys.exit(f"the NumPy backward disagrees with finite differences ({error:.2e})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None)
    args = parser.parse_args()
    path = args.model or refenv.default_model()
    model = NumpyLlama(str(path))
    h = model.hp.n_embd
    rng = np.random.default_rng(SEED)
    x = rng.uniform(-1.7, 1.7, (POSITIONS, h))
    prompts = [rng.uniform(-0.1, 0.1, (PROMPT_ROWS, h)) for _ in range(FIRST, LAST)]
    r = rng.uniform(-1, 1, (POSITIONS, h))
    # Inputs are stored as f32 (what the Rust test feeds): compute on those.
    x, r = x.astype(np.float32).astype(np.float64), r.astype(np.float32).astype(np.float64)
    prompts = [p.astype(np.float32).astype(np.float64) for p in prompts]
    y, tapes = span_forward(model, x, prompts)
    dx, dprompts = span_backward(model, tapes, r)
    self_check(model, x, prompts, r, dx, dprompts)

    def floats(a):
        return [float(f"{v:.9g}") for v in np.asarray(a, dtype=np.float64).ravel()]

    fixture = {
        "about": "tools/reference/backward_reference.py: exact float64 NumPy forward and hand-written backward",
        "model_sha256": refenv.sha256_file(Path(path)),
        "blocks": [FIRST, LAST],
        "positions": POSITIONS,
        "prompt_rows": PROMPT_ROWS,
        "hidden": h,
        "packages": refenv.package_versions(["numpy", "gguf"]),
        "x": floats(x),
        "prompts": [floats(p) for p in prompts],
        "grad_output": floats(r),
        "output": floats(y),
        "grad_input": floats(dx),
        "grad_prompts": [floats(g) for g in dprompts],
    }
    out = Path(__file__).resolve().parents[2] / "crates/model/tests/fixtures/backward_reference.json"
    out.write_text(refenv.dump_json(fixture) + "\n")
    refenv.log(f"wrote {out}")


if __name__ == "__main__":
    main()
