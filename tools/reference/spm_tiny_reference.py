#!/usr/bin/env python3
"""A tiny SentencePiece ("llama" tokenizer model) fixture.

1. Trains a SentencePiece BPE model (byte fallback, llama-style settings) on
   tools/reference/spm_corpus.txt.
2. Writes it as a vocab-only GGUF, crates/model/tests/fixtures/spm-tiny.gguf,
   with llama.cpp's conventions for SentencePiece vocabularies
   (tokenizer.ggml.model = "llama", tokens, scores, token types).
3. Writes crates/model/tests/fixtures/spm-tiny.json: the ids SentencePiece
   gives for a set of test strings, and what llama.cpp gives loading the GGUF
   with vocab_only=True, with any disagreement spelled out.

Run: python3 tools/reference/spm_tiny_reference.py (creates or reuses the
pinned venv by itself). Deterministic: same corpus, same files.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import refenv  # noqa: E402

refenv.ensure_venv()

import platform  # noqa: E402
import tempfile  # noqa: E402

import gguf  # noqa: E402
import llama_cpp  # noqa: E402
import sentencepiece as spm  # noqa: E402

CORPUS = refenv.REFERENCE_DIR / "spm_corpus.txt"
GGUF_OUT = refenv.FIXTURES_DIR / "spm-tiny.gguf"
JSON_OUT = refenv.FIXTURES_DIR / "spm-tiny.json"
VOCAB_SIZE = 640

# llama.cpp's token types (enum llama_token_type / gguf.TokenType).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

TEST_STRINGS = [
    ("empty", ""),
    ("plain", "The quick brown fox jumps over the lazy dog."),
    ("leading_space", " Hello world"),
    ("multiple_spaces", "two  spaces and   three"),
    ("leading_and_trailing_spaces", "   padded   "),
    ("only_spaces", "    "),
    ("newlines", "line one\nline two\n\nline four\n"),
    ("tabs_carriage_return", "a\ttab and a\r\nwindows line end"),
    ("digits", "Room 404, 1234567890 and 3.14159"),
    ("unknown_ascii_bytes", "a~b^c|d@e#f$g%h&i*j"),
    ("non_ascii_latin", "Café naïve façade"),
    ("cjk_emoji", "日本語 🤖👍🏽"),
    ("control_token_text", "<s>start</s> and <unk>"),
    ("mixed_case_punctuation", "Why? Because \"HELLO\", she said; (maybe) - yes!"),
]


def train(workdir: Path) -> spm.SentencePieceProcessor:
    """BPE with the settings llama's own tokenizer.model uses, at toy size."""
    prefix = workdir / "spm-tiny"
    spm.SentencePieceTrainer.train(
        input=str(CORPUS),
        model_prefix=str(prefix),
        model_type="bpe",
        vocab_size=VOCAB_SIZE,
        byte_fallback=True,
        split_digits=True,
        character_coverage=1.0,
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    return spm.SentencePieceProcessor(model_file=str(prefix) + ".model")


def token_type(sp: spm.SentencePieceProcessor, i: int) -> int:
    if sp.is_unknown(i):
        return UNKNOWN
    if sp.is_control(i):
        return CONTROL
    if sp.is_byte(i):
        return BYTE
    if sp.is_unused(i):
        return UNUSED
    return NORMAL


def write_gguf(sp: spm.SentencePieceProcessor, path: Path) -> None:
    n = sp.get_piece_size()
    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_name("spm-tiny (vocab only, test fixture)")
    # Hyperparameters llama.cpp requires even for vocab_only loads; the file
    # has no tensors, so they describe nothing real.
    writer.add_vocab_size(n)
    writer.add_context_length(256)
    writer.add_embedding_length(64)
    writer.add_block_count(1)
    writer.add_feed_forward_length(128)
    writer.add_head_count(1)
    writer.add_head_count_kv(1)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(64)
    writer.add_tokenizer_model("llama")
    writer.add_token_list([sp.id_to_piece(i).encode("utf-8") for i in range(n)])
    writer.add_token_scores([float(sp.get_score(i)) for i in range(n)])
    writer.add_token_types([token_type(sp, i) for i in range(n)])
    writer.add_unk_token_id(sp.unk_id())
    writer.add_bos_token_id(sp.bos_id())
    writer.add_eos_token_id(sp.eos_id())
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(True)
    writer.add_remove_extra_whitespaces(False)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main() -> None:
    refenv.FIXTURES_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        sp = train(Path(tmp))
    write_gguf(sp, GGUF_OUT)

    llm = llama_cpp.Llama(model_path=str(GGUF_OUT), vocab_only=True, verbose=False)

    def cpp(text: str, add_special: bool, parse_special: bool) -> list[int]:
        return llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=parse_special)

    cases, disagreements = [], []
    for name, text in TEST_STRINGS:
        ids = sp.encode(text, out_type=int)
        cpp_ids = cpp(text, add_special=False, parse_special=False)
        case = {
            "name": name,
            "text": text,
            "ids": ids,
            "pieces": [sp.id_to_piece(i) for i in ids],
            "decoded": sp.decode(ids),
            "llama_cpp_ids": cpp_ids,
            "llama_cpp_ids_add_special": cpp(text, add_special=True, parse_special=False),
            "llama_cpp_ids_parse_special": cpp(text, add_special=False, parse_special=True),
            "agree": ids == cpp_ids,
        }
        cases.append(case)
        if ids != cpp_ids:
            disagreements.append(name)
            refenv.log(f"{name}: sentencepiece {ids} != llama.cpp {cpp_ids}")

    n = sp.get_piece_size()
    fixture = {
        "description": "Tiny SentencePiece BPE vocab (spm-tiny.gguf) and reference tokenizations; "
        "see tools/reference/README.md",
        "generator": {
            "script": "tools/reference/spm_tiny_reference.py",
            "python": platform.python_version(),
            "llama_cpp_python": llama_cpp.__version__,
            **refenv.package_versions(["sentencepiece", "gguf"]),
        },
        "gguf": GGUF_OUT.name,
        "gguf_sha256": refenv.sha256_file(GGUF_OUT),
        "vocab_size": n,
        "bos_id": sp.bos_id(),
        "eos_id": sp.eos_id(),
        "unk_id": sp.unk_id(),
        "add_bos": True,
        "add_space_prefix": True,
        "settings": "ids: SentencePiece encode (no BOS). llama_cpp_ids: llama_tokenize(add_special=false, "
        "parse_special=false); _add_special: add_special=true (BOS prepended); _parse_special: "
        "parse_special=true (control-token text becomes the control token).",
        "disagreements": disagreements,
        "cases": cases,
    }
    JSON_OUT.write_text(refenv.dump_json(fixture) + "\n", encoding="utf-8")
    refenv.log(f"wrote {GGUF_OUT} ({GGUF_OUT.stat().st_size} bytes) and {JSON_OUT}")


if __name__ == "__main__":
    main()
