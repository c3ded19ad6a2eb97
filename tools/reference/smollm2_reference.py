#!/usr/bin/env python3
"""Reference fixture for the default model (SmolLM2-135M-Instruct Q4_1).

Writes crates/model/tests/fixtures/smollm2_reference.json with, per prompt:

* the token ids llama.cpp gives (llama-cpp-python, GGUF's add_bos setting,
  parse_special true and false),
* llama.cpp's top-5 next-token logits and its 32-token greedy continuation,
* the same from an exact float64 NumPy forward pass (numpy_llama.py),
  and the largest difference between the two,

plus the GGUF's chat template rendered with jinja2 the way HF transformers
renders it, and the hidden state of the last prompt position at the block
boundaries 0, 10, 20, 30 for one prompt (for testing spans of blocks).

Run: python3 tools/reference/smollm2_reference.py [--model PATH]
(it creates or reuses the pinned venv by itself; the first run compiles
llama.cpp). Deterministic: same inputs, same file.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import refenv  # noqa: E402

refenv.ensure_venv()

import argparse  # noqa: E402
import ctypes  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402

import jinja2  # noqa: E402
import jinja2.sandbox  # noqa: E402
import llama_cpp  # noqa: E402
import numpy as np  # noqa: E402
from gguf import GGUFReader  # noqa: E402

from numpy_llama import KvCache, NumpyLlama  # noqa: E402

PROMPTS = [
    ("plain_english", "The capital of France is"),
    ("spaces", "  two leading,  double  and   triple spaces, trailing   "),
    ("newlines_tabs", "First line\nSecond line\n\n\tTabbed line\r\nend"),
    ("digits", "12345 + 678 = 13023, and 3.14159 * 2 = 6.28318"),
    ("code_punctuation", "def add(a, b):\n    return a + b  # sum! {x: [1, 2]} -> \"ok\";"),
    ("non_ascii_emoji", "Café naïve façade — 日本語のテキスト, Ελληνικά, 🤖👍🏽 ok?"),
    ("special_tokens", "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"),
    ("long_sentence", "Once upon a time, in a small village by the sea, there lived an old fisherman who"),
]

CONVERSATIONS = [
    (
        "user_only_generation_prompt",
        [{"role": "user", "content": "What is the capital of France?"}],
        True,
    ),
    (
        "system_multi_turn_generation_prompt",
        [
            {"role": "system", "content": "You are a terse assistant. Answer in one line."},
            {"role": "user", "content": "Hi!"},
            {"role": "assistant", "content": "Hello. What do you need?"},
            {"role": "user", "content": "Name three primary colours."},
        ],
        True,
    ),
    (
        "no_generation_prompt",
        [
            {"role": "user", "content": "Say hello in French."},
            {"role": "assistant", "content": "Bonjour !"},
        ],
        False,
    ),
]

GREEDY_TOKENS = 32
TOP_K = 5
# Hidden states recorded at these block boundaries (3 spans of 10 blocks).
SPAN_BOUNDARIES = [0, 10, 20, 30]
N_THREADS = 2
N_CTX = 512
# Recommended tolerances on top-5 logits against the exact NumPy pass; the
# measured differences that justify them are written next to them.
EXACT_ENGINE_TOLERANCE = 5e-3
QUANTIZED_ENGINE_TOLERANCE = 1.0


def top_k(logits: np.ndarray, k: int = TOP_K) -> tuple[list[int], list[float]]:
    """The k largest logits, ties broken by the lower token id."""
    order = np.lexsort((np.arange(len(logits)), -logits))[:k]
    return [int(i) for i in order], [float(logits[i]) for i in order]


class LlamaCpp:
    """llama.cpp through llama-cpp-python's low-level calls."""

    def __init__(self, model: Path):
        self.llm = llama_cpp.Llama(
            model_path=str(model),
            n_ctx=N_CTX,
            n_batch=N_CTX,
            n_threads=N_THREADS,
            n_threads_batch=N_THREADS,
            logits_all=False,
            verbose=False,
        )
        self.vocab = self.llm._model.vocab
        self.n_vocab = self.llm.n_vocab()
        self.eos = self.llm.token_eos()
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))

    def tokenize(self, text: str, parse_special: bool) -> list[int]:
        # add_special=True: llama.cpp then adds BOS/EOS as the GGUF says.
        return self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=parse_special)

    def piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(256)
        n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        if n < 0:
            raise RuntimeError(f"token {token} piece longer than 256 bytes")
        return buf.raw[:n]

    def _last_logits(self) -> np.ndarray:
        ptr = self.llm._ctx.get_logits()
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).astype(np.float64)

    def run(self, ids: list[int]) -> tuple[np.ndarray, list[int]]:
        """Logits after the prompt and the greedy continuation (stops after EOS)."""
        self.llm.reset()
        self.llm.eval(ids)
        first = self._last_logits()
        logits, out = first, []
        for _ in range(GREEDY_TOKENS):
            tok = top_k(logits, 1)[0][0]
            out.append(tok)
            if tok == self.eos:
                break
            self.llm.eval([tok])
            logits = self._last_logits()
        return first, out


def numpy_greedy(model: NumpyLlama, ids: list[int], eos: int, record=None):
    """Exact logits after the prompt, greedy continuation and each step's top1-top2 margin."""
    cache = KvCache()
    logits, recorded = model.forward(ids, cache, record=record)
    first = logits[-1]
    last, out, margins = first, [], []
    for _ in range(GREEDY_TOKENS):
        (t1, t2), (l1, l2) = top_k(last, 2)
        out.append(t1)
        margins.append(l1 - l2)
        if t1 == eos:
            break
        logits, _ = model.forward([t1], cache)
        last = logits[-1]
    return first, out, margins, recorded


def render_chat(template: str, messages, add_generation_prompt: bool, bos: str, eos: str) -> str:
    """Renders like transformers' apply_chat_template (sandboxed jinja2)."""

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(
        messages=messages,
        add_generation_prompt=add_generation_prompt,
        bos_token=bos,
        eos_token=eos,
    )


def max_abs_diff(a: np.ndarray, b: np.ndarray, ids_a: list[int], ids_b: list[int]) -> float:
    """Largest |a - b| over the union of the two top-5 id sets."""
    union = sorted(set(ids_a) | set(ids_b))
    return float(np.max(np.abs(a[union] - b[union])))


def variant_diff(model: NumpyLlama, prompt: dict, exact: np.ndarray, cpp: np.ndarray) -> tuple[float, float]:
    """How far a variant pass (f32, llama.cpp roundings) lands from the exact
    logits and from llama.cpp's, over the union of the three top-5 id sets."""
    logits = model.forward(prompt["ids"], KvCache())[0][-1]
    ids = set(top_k(logits)[0]) | set(prompt["numpy"]["top5_ids"]) | set(prompt["llama_cpp"]["top5_ids"])
    ids = sorted(ids)
    return float(np.max(np.abs(logits[ids] - exact[ids]))), float(np.max(np.abs(logits[ids] - cpp[ids])))


def rounded(values) -> list[float]:
    """Floats kept to 7 significant digits: plenty for any tolerance used."""
    return [float(f"{v:.7g}") for v in values]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="GGUF path (default: fetch the pinned default model)")
    parser.add_argument(
        "--out", type=Path, default=refenv.FIXTURES_DIR / "smollm2_reference.json", help="fixture to write"
    )
    args = parser.parse_args()
    model_path = args.model or refenv.default_model()
    model_sha = refenv.sha256_file(model_path)

    refenv.log(f"loading {model_path} in llama.cpp")
    cpp = LlamaCpp(model_path)
    refenv.log("loading the NumPy reference (dequantizing every tensor)")
    ref = NumpyLlama(str(model_path))
    reader = GGUFReader(str(model_path))
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    template = reader.fields["tokenizer.chat_template"].contents()
    bos_id = int(reader.fields["tokenizer.ggml.bos_token_id"].contents())
    eos_id = int(reader.fields["tokenizer.ggml.eos_token_id"].contents())
    if eos_id != cpp.eos:
        sys.exit(f"llama.cpp eos {cpp.eos} != GGUF eos {eos_id}")

    prompts, exact, cpp_logits_all, hidden_entry = [], [], [], None
    for index, (name, text) in enumerate(PROMPTS):
        refenv.log(f"prompt {name}")
        ids = cpp.tokenize(text, parse_special=True)
        ids_plain = cpp.tokenize(text, parse_special=False)
        cpp_logits, cpp_greedy = cpp.run(ids)
        record = SPAN_BOUNDARIES if index == 0 else None
        np_logits, np_greedy, margins, hidden = numpy_greedy(ref, ids, eos_id, record)
        cpp_ids, cpp_vals = top_k(cpp_logits)
        np_ids, np_vals = top_k(np_logits)
        entry = {
            "name": name,
            "text": text,
            "ids": ids,
            "ids_parse_special_false": ids_plain,
            "parse_special_differs": ids != ids_plain,
            "llama_cpp": {
                "top5_ids": cpp_ids,
                "top5_logits": rounded(cpp_vals),
                "greedy_ids": cpp_greedy,
                "greedy_text": b"".join(cpp.piece(t) for t in cpp_greedy).decode("utf-8", "replace"),
            },
            "numpy": {
                "top5_ids": np_ids,
                "top5_logits": rounded(np_vals),
                "logits_at_llama_cpp_top5": rounded(np_logits[cpp_ids]),
                "greedy_ids": np_greedy,
                "greedy_top1_margins": rounded(margins),
            },
            # Compared on the union of both top-5 sets, each side's own logit per id.
            "max_abs_diff_top5": max_abs_diff(cpp_logits, np_logits, cpp_ids, np_ids),
            "greedy_agree": cpp_greedy == np_greedy,
        }
        prompts.append(entry)
        exact.append(np_logits)
        cpp_logits_all.append(cpp_logits)
        if hidden:
            hidden_entry = {
                "prompt": name,
                "position": len(ids) - 1,
                "boundaries": {str(b): rounded(hidden[b]) for b in SPAN_BOUNDARIES},
                "final_norm": rounded(hidden["final_norm"]),
            }

    refenv.log("measuring how far f32 math and llama.cpp-style roundings move the exact logits")
    ref.llama_cpp_rounding = True
    emulated = [variant_diff(ref, *args) for args in zip(prompts, exact, cpp_logits_all)]
    ref.llama_cpp_rounding = False
    # Which rope layout llama.cpp uses: only "norm" (adjacent pairs) matches.
    ref.rope_style = "neox"
    neox = [ref.forward(p["ids"], KvCache())[0][-1] for p in prompts]
    ref.rope_style = "norm"
    del ref
    ref32 = NumpyLlama(str(model_path), dtype=np.float32)
    single = [variant_diff(ref32, *args) for args in zip(prompts, exact, cpp_logits_all)]
    n_vocab, n_layer, tied = ref32.hp.n_vocab, ref32.hp.n_layer, ref32.tied_embeddings
    del ref32

    rope_check = {
        "what": "max abs diff of top-5 logits from llama.cpp's, over all prompts, for each rope layout",
        "norm_adjacent_pairs_max_abs_diff": max(p["max_abs_diff_top5"] for p in prompts),
        "neox_halves_max_abs_diff": max(
            max_abs_diff(n, cpp_all, top_k(n)[0], p["llama_cpp"]["top5_ids"])
            for n, cpp_all, p in zip(neox, cpp_logits_all, prompts)
        ),
        "neox_top1_matches_llama_cpp": sum(
            top_k(n, 1)[0] == p["llama_cpp"]["top5_ids"][:1] for n, p in zip(neox, prompts)
        ),
        "norm_top1_matches_llama_cpp": sum(
            p["numpy"]["top5_ids"][0] == p["llama_cpp"]["top5_ids"][0] for p in prompts
        ),
        "prompts": len(prompts),
    }
    measured = {
        "llama_cpp_vs_exact": max(p["max_abs_diff_top5"] for p in prompts),
        "numpy_f32_vs_exact": max(d[0] for d in single),
        "llama_cpp_rounding_emulation_vs_exact": max(d[0] for d in emulated),
        "llama_cpp_rounding_emulation_vs_llama_cpp": max(d[1] for d in emulated),
    }
    for p, s, e in zip(prompts, single, emulated):
        p["numpy"]["f32_max_abs_diff_top5"] = s[0]
        p["numpy"]["llama_cpp_rounding_max_abs_diff_top5"] = e[0]

    chats = []
    for name, messages, add_gen in CONVERSATIONS:
        rendered = render_chat(template, messages, add_gen, tokens[bos_id], tokens[eos_id])
        chats.append(
            {
                "name": name,
                "messages": messages,
                "add_generation_prompt": add_gen,
                "rendered": rendered,
                "ids": cpp.tokenize(rendered, parse_special=True),
            }
        )

    fixture = {
        "description": "SmolLM2-135M-Instruct Q4_1: llama.cpp and exact NumPy references; see tools/reference/README.md",
        "generator": {
            "script": "tools/reference/smollm2_reference.py",
            "python": platform.python_version(),
            "llama_cpp_python": llama_cpp.__version__,
            **refenv.package_versions(["gguf", "numpy", "jinja2"]),
            "llama_cpp_threads": N_THREADS,
            "llama_cpp_n_ctx": N_CTX,
        },
        "model": {
            "file": model_path.name,
            "sha256": model_sha,
            "source": refenv.DEFAULT_MODEL_WHEEL,
            "n_vocab": n_vocab,
            "n_layer": n_layer,
            "add_bos": cpp.add_bos,
            "bos_id": bos_id,
            "eos_id": eos_id,
            "tied_embeddings": tied,
        },
        "tokenize_settings": "ids: llama_tokenize(add_special=true, parse_special=true); "
        "ids_parse_special_false: parse_special=false. Logits and greedy use ids.",
        "greedy_tokens": GREEDY_TOKENS,
        "tolerance": {
            "measured_max_abs_diff_top5": measured,
            "exact_engine_abs": EXACT_ENGINE_TOLERANCE,
            "quantized_activation_engine_abs": QUANTIZED_ENGINE_TOLERANCE,
            "greedy_rule": "compare greedy_ids with numpy.greedy_ids up to the first step whose "
            "numpy.greedy_top1_margins value is below 2 * tolerance",
            "justification": "tools/reference/README.md",
        },
        "rope_check": rope_check,
        "prompts": prompts,
        "hidden_states": hidden_entry,
        "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest(),
        "chat_templates": chats,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(refenv.dump_json(fixture) + "\n", encoding="utf-8")
    refenv.log(f"wrote {args.out}; max abs diffs over top-5 logits: {measured}")


if __name__ == "__main__":
    main()
