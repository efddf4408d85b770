# Sourced by ./run.sh and ./test.sh: create .venv and install the project into it once
# (again whenever pyproject.toml changes). The installer's chatter goes to .venv/install.log.
ensure_venv() {
  local extra="${1:-}" stamp=".venv/.installed-${1:-base}"
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
  fi
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "installing into .venv (log: .venv/install.log) ..." >&2
    if ! { .venv/bin/python -m pip install --upgrade pip \
           && .venv/bin/python -m pip install -e ".${extra:+[$extra]}"; } >.venv/install.log 2>&1; then
      tail -20 .venv/install.log >&2
      echo "install failed; see .venv/install.log" >&2
      return 1
    fi
    touch "$stamp"
  fi
}

# A wheelhouse of the project's dependencies in .venv/wheelhouse, for deploy/cluster.sh
# --wheels (machines without PyPI; the tests' namespace hosts are such machines).
ensure_wheelhouse() {
  local dir=.venv/wheelhouse stamp=.venv/wheelhouse/.built
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "building the wheelhouse .venv/wheelhouse (log: .venv/install.log) ..." >&2
    rm -rf "$dir"
    if ! .venv/bin/python -m pip wheel --wheel-dir "$dir" . >>.venv/install.log 2>&1; then
      echo "building the wheelhouse failed; see .venv/install.log" >&2
      return 1
    fi
    rm -f "$dir"/leased_chat-*.whl  # the project itself is built from its source on each host
    touch "$stamp"
  fi
}
