#!/usr/bin/env python3
"""llama.cpp's answers on any GGUF files, for checking the engine's kernels
and architectures against it.

For each model given as LABEL=PATH, and each prompt below, records:

* the token ids llama.cpp gives (add_special, parse_special),
* llama.cpp's top-5 next-token logits after the prompt,
* its greedy continuation (GREEDY_TOKENS tokens, stopping at EOS) and, at
  each step, the margin between its first and second logits, so a test can
  hold the engine to llama.cpp's tokens only where the winner is clear.

usage: python3 tools/reference/gguf_reference.py --out FIXTURE.json LABEL=PATH...

Each file is recorded by name and sha256; model files are not committed.
Made by tools/reference/quantize.sh + this script for
crates/model/tests/fixtures/quantized_reference.json (the default model in
every quantization) and gemma3_reference.json (Gemma 3 270M).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import refenv  # noqa: E402

refenv.ensure_venv()

import argparse  # noqa: E402
import platform  # noqa: E402

import llama_cpp  # noqa: E402
import numpy as np  # noqa: E402

from smollm2_reference import LlamaCpp, top_k  # noqa: E402

GREEDY_TOKENS = 24

PROMPTS = [
    ("plain_english", "The capital of France is"),
    ("long_sentence", "Once upon a time, in a small village by the sea, there lived an old fisherman who"),
    ("code", "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"),
    ("non_ascii", "Café naïve façade — 日本語のテキスト, Ελληνικά"),
]


def greedy(cpp: LlamaCpp, ids: list[int]) -> tuple[np.ndarray, list[int], list[float]]:
    """Logits after the prompt, the greedy tokens and each step's margin."""
    cpp.llm.reset()
    cpp.llm.eval(ids)
    first = cpp._last_logits()
    logits, out, margins = first, [], []
    for _ in range(GREEDY_TOKENS):
        (t1, _t2), (l1, l2) = top_k(logits, 2)
        out.append(t1)
        margins.append(round(l1 - l2, 5))
        if t1 == cpp.eos:
            break
        cpp.llm.eval([t1])
        logits = cpp._last_logits()
    return first, out, margins


def model_entry(label: str, path: Path) -> dict:
    refenv.log(f"{label}: {path.name}")
    cpp = LlamaCpp(path)
    prompts = []
    for name, text in PROMPTS:
        ids = cpp.tokenize(text, parse_special=True)
        first, tokens, margins = greedy(cpp, ids)
        top_ids, top_logits = top_k(first, 5)
        prompts.append({
            "name": name,
            "text": text,
            "ids": ids,
            "top5_ids": top_ids,
            "top5_logits": [round(v, 5) for v in top_logits],
            "greedy_ids": tokens,
            "greedy_margins": margins,
        })
    return {
        "label": label,
        "file": path.name,
        "sha256": refenv.sha256_file(path),
        "eos_id": cpp.eos,
        "prompts": prompts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("models", nargs="+", help="LABEL=PATH")
    args = parser.parse_args()
    entries = []
    for spec in args.models:
        label, _, path = spec.partition("=")
        entries.append(model_entry(label, Path(path)))
    fixture = {
        "generator": {
            "script": "tools/reference/gguf_reference.py",
            "python": platform.python_version(),
            "llama_cpp_python": llama_cpp.__version__,
            "threads": 2,
        },
        "models": entries,
    }
    args.out.write_text(refenv.dump_json(fixture) + "\n", encoding="utf-8")
    refenv.log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
