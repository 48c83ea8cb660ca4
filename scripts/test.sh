#!/usr/bin/env bash
# The test suite, as README and CI run it: the browser and web-server tests (tests/web) in a pytest process of
# their own. In one process with the ~1,200 tests before them, the interpreter has crashed (SIGSEGV) when
# tests/web started its Node server after the browser test (two CI runs on 2026-12-07; each half passes alone).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest -q --ignore=tests/web "$@"
.venv/bin/python -m pytest -q tests/web "$@"
