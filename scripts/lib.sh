# Shared helpers for scripts/*: a pinned Python virtualenv and loopback ports.
# Sourced, not run.

VENV="${WSC_VENV:-$PWD/target/venv}"

# venv_install PKG...: makes $VENV if needed and installs the pinned packages into it.
venv_install() {
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
  fi
  local missing=()
  for p in "$@"; do
    "$VENV/bin/python" -m pip show -q "${p%%==*}" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${missing[@]}"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listening on port $1" >&2
  return 1
}
