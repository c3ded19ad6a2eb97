#!/usr/bin/env bash
# Creates or reuses the reference venv ($HYPERTENSOR_HOME/venv, default
# ~/.cache/hypertensor/venv): pinned packages from requirements.txt plus
# llama-cpp-python built from its sha256-checked PyPI sdist. Prints the
# venv's python path. The first run compiles llama.cpp (several minutes).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
ht_full_venv
echo "$HT_VENV/bin/python"
