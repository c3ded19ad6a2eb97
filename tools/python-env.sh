#!/usr/bin/env bash
# Creates (or reuses) the Python venv the API tests drive the official
# `openai` client from, and prints its python's path on stdout.
# The venv lives in the per-user cache; it is rebuilt when the pinned
# requirements change (their sha256 is recorded inside the venv).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
requirements="$root/crates/api/tests/openai-requirements.txt"
venv="${HYPERTENSOR_HOME:-$HOME/.cache/hypertensor}/venv-openai"
want="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && "$(cat "$venv/.requirements-sha256" 2>/dev/null)" == "$want" ]]; then
  echo "$venv/bin/python"
  exit 0
fi
python="${PYTHON:-$(command -v python3 || true)}"
[[ -n "$python" ]] || { echo "python-env.sh: python3 not found" >&2; exit 1; }
mkdir -p "$(dirname "$venv")"
# Build beside the final place and move it in, so a half-made venv is never used.
tmp="$venv.tmp.$$"
rm -rf "$tmp"
trap 'rm -rf "$tmp"' EXIT
"$python" -m venv "$tmp" >&2
"$tmp/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" >&2
echo "$want" > "$tmp/.requirements-sha256"
rm -rf "$venv"
mv "$tmp" "$venv"
trap - EXIT
echo "$venv/bin/python"
