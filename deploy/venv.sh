# Sourced by ./run.sh, ./test.sh and deploy/lock.sh: make .venv exactly what uv.lock says.
#
# uv.lock is the one record of every version the product and its tests install, with
# hashes. The checkout's .venv holds all of it (the product, the client extra and the dev
# and build groups), so ./run.sh and ./test.sh share one environment. A fresh machine has
# no uv: pip installs the locked uv (its hashes read from uv.lock) into .venv first, and
# uv does the rest. The installers' chatter goes to .venv/install.log.
ensure_venv() {
  local stamp=.venv/.synced
  if [ -f "$stamp" ] && [ ! pyproject.toml -nt "$stamp" ] && [ ! uv.lock -nt "$stamp" ]; then
    return 0
  fi
  echo "installing from uv.lock into .venv (log: .venv/install.log) ..." >&2
  [ -x .venv/bin/python ] || python3 -m venv .venv
  if ! { [ -x .venv/bin/uv ] || bootstrap_uv; } >.venv/install.log 2>&1 \
    || ! .venv/bin/uv sync --locked --all-extras >>.venv/install.log 2>&1; then
    tail -20 .venv/install.log >&2
    echo "install failed; see .venv/install.log" >&2
    return 1
  fi
  touch "$stamp"
}

# pip install the uv release that uv.lock names, checked against the lock's hashes.
bootstrap_uv() {
  .venv/bin/python - >.venv/uv-requirement.txt <<'EOF'
import tomllib

with open("uv.lock", "rb") as lock:
    uv = next(p for p in tomllib.load(lock)["package"] if p["name"] == "uv")
print(f"uv=={uv['version']}", *(f"--hash={wheel['hash']}" for wheel in uv["wheels"]))
EOF
  .venv/bin/python -m pip install --require-hashes --no-deps -r .venv/uv-requirement.txt
}

# What a node installs, exported from uv.lock (the product's dependencies and the build
# group's setuptools, with hashes), on stdout: deploy/node-requirements.txt holds it, and
# tests/api/test_dependencies.py checks that it still matches the lock.
node_requirements() {
  .venv/bin/uv export --frozen --no-default-groups --group build --no-emit-project \
    --quiet
}

# A wheelhouse of what a node installs, in .venv/wheelhouse, for deploy/cluster.sh --wheels
# (machines without PyPI; the tests' namespace hosts are such machines).
ensure_wheelhouse() {
  local dir=.venv/wheelhouse stamp=.venv/wheelhouse/.built
  if [ ! -f "$stamp" ] || [ deploy/node-requirements.txt -nt "$stamp" ]; then
    echo "building the wheelhouse .venv/wheelhouse (log: .venv/install.log) ..." >&2
    rm -rf "$dir"
    if ! .venv/bin/python -m pip download --require-hashes --no-deps --only-binary :all: \
      --dest "$dir" -r deploy/node-requirements.txt >>.venv/install.log 2>&1; then
      echo "building the wheelhouse failed; see .venv/install.log" >&2
      return 1
    fi
    touch "$stamp"
  fi
}
