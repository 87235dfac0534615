# Sourced by scripts/run and scripts/test: installs what is missing, idempotently.
# Everything installed lives outside the checkout (cargo's home, a cache dir),
# so a fresh clone on the same machine reuses it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${STREAMCHAT_CACHE_DIR:-$HOME/.cache/streamchat}"
# Builds go outside the clone so a new clone builds warm; override freely.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE_DIR/target}"
export PATH="$HOME/.cargo/bin:$CACHE_DIR/tools/node_modules/.bin:$PATH"

CARGO_LEPTOS_VERSION=0.3.10
BINARYEN_VERSION=132.0.0

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

ensure_rust() {
  # Passkeys (webauthn-rs) link OpenSSL: its headers and pkg-config.
  if ! pkg-config --exists openssl 2>/dev/null; then
    say "installing Debian's OpenSSL headers (libssl-dev, pkg-config)"
    local sudo=""
    [[ "$(id -u)" -ne 0 ]] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libssl-dev pkg-config
  fi
  if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    say "adding the wasm32-unknown-unknown target"
    rustup target add wasm32-unknown-unknown
  fi
  if [[ "$(cargo leptos --version 2>/dev/null)" != *"$CARGO_LEPTOS_VERSION"* ]]; then
    say "installing cargo-leptos $CARGO_LEPTOS_VERSION (takes ~15-20 min once)"
    cargo install --locked "cargo-leptos@$CARGO_LEPTOS_VERSION" --features no_downloads
  fi
  # wasm-bindgen-cli must equal the wasm-bindgen crate in Cargo.lock.
  local want
  want="$(grep -A1 '^name = "wasm-bindgen"$' "$ROOT/Cargo.lock" | sed -n 's/^version = "\(.*\)"/\1/p')"
  if [[ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $want" ]]; then
    say "installing wasm-bindgen-cli $want"
    cargo install wasm-bindgen-cli --version "=$want" --force
  fi
}

# wasm-opt for release builds: npm's binaryen (Debian's 108 breaks hydration).
ensure_wasm_opt() {
  if [[ "$(wasm-opt --version 2>/dev/null)" != *"${BINARYEN_VERSION%%.*}"* ]]; then
    say "installing binaryen $BINARYEN_VERSION (wasm-opt)"
    mkdir -p "$CACHE_DIR/tools"
    npm install --prefix "$CACHE_DIR/tools" --no-audit --no-fund "binaryen@$BINARYEN_VERSION"
  fi
}

ensure_browser() {
  if [[ ! -x /usr/bin/chromium ]]; then
    say "installing Debian's Chromium"
    local sudo=""
    [[ "$(id -u)" -ne 0 ]] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium
  fi
  # The Playwright runner, and the MCP server the Rust tests give a bot
  # (@modelcontextprotocol/server-everything, run over stdio).
  if [[ ! -d "$ROOT/end2end/node_modules/@playwright/test" \
     || ! -d "$ROOT/end2end/node_modules/@modelcontextprotocol/server-everything" ]]; then
    say "installing the Playwright test runner and the MCP test server"
    (cd "$ROOT/end2end" && npm ci --no-audit --no-fund)
  fi
}

# A real OpenID Connect provider for the sign-in tests: PyPI's
# oidc-provider-mock in its own virtualenv (the Rust tests run it on a free
# port; STREAMCHAT_OIDC_PROVIDER_MOCK names it).
OIDC_PROVIDER_MOCK_VERSION=0.3.4
ensure_oidc_provider() {
  local venv="$CACHE_DIR/tools/py"
  if [[ "$("$venv/bin/pip" show oidc-provider-mock 2>/dev/null | sed -n 's/^Version: //p')" != "$OIDC_PROVIDER_MOCK_VERSION" ]]; then
    say "installing oidc-provider-mock $OIDC_PROVIDER_MOCK_VERSION (the tests' OpenID Connect provider)"
    mkdir -p "$CACHE_DIR/tools"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "oidc-provider-mock==$OIDC_PROVIDER_MOCK_VERSION"
  fi
  export STREAMCHAT_OIDC_PROVIDER_MOCK="$venv/bin/oidc-provider-mock"
}

# A PostgreSQL for the tests of several instances: the one
# STREAMCHAT_TEST_DATABASE_URL names, else the local one (started, or
# installed from Debian's packages, when none answers). Exports the URL and
# drops databases that earlier test runs left behind.
ensure_postgres() {
  local url="${STREAMCHAT_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
  if ! pg_answers "$url"; then
    local sudo=""
    [[ "$(id -u)" -ne 0 ]] && sudo="sudo"
    if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
      say "installing Debian's PostgreSQL for the tests"
      $sudo apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql
    fi
    local version
    version="$(ls /etc/postgresql | sort -V | tail -1)"
    say "starting PostgreSQL $version"
    $sudo pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    if ! pg_answers "$url"; then
      # A fresh install asks TCP clients for a password: give one.
      $sudo su postgres -c "psql -qc \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null
      url="postgres://postgres:postgres@127.0.0.1:5432/postgres"
    fi
    pg_answers "$url" || { echo "PostgreSQL does not answer at $url" >&2; return 1; }
  fi
  export STREAMCHAT_TEST_DATABASE_URL="$url"
  local leftover
  for leftover in $(psql "$url" -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'sc\_test\_%'"); do
    psql "$url" -qc "DROP DATABASE IF EXISTS $leftover WITH (FORCE)" >/dev/null || true
  done
}

pg_answers() {
  command -v psql >/dev/null && psql "$1" -Atc 'SELECT 1' >/dev/null 2>&1
}

# Starts the built server in the background on $1 (host:port) with database $2.
# Sets SERVER_PID. The caller stops it.
start_server() {
  local addr="$1" db="$2" bin="$3" site_root="$4"
  # /healthz answers in every access mode (pages may ask to sign in first).
  if curl -fsS -o /dev/null "http://$addr/healthz" 2>/dev/null; then
    echo "something already listens on $addr; stop it or set another address" >&2
    return 1
  fi
  (cd "$ROOT" && LEPTOS_SITE_ADDR="$addr" LEPTOS_SITE_ROOT="$site_root" STREAMCHAT_DATABASE="$db" \
    exec "$bin" >"${SERVER_LOG:-/dev/stderr}" 2>&1) &
  SERVER_PID=$!
  for _ in $(seq 1 300); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then echo "server exited" >&2; return 1; fi
    if curl -fsS -o /dev/null "http://$addr/healthz" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "server did not start on $addr" >&2
  return 1
}
