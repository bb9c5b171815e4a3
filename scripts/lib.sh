# Shared helpers for the scripts in this folder. Source it; it defines functions and IMGPIPE_ROOT, nothing else.

IMGPIPE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# log MESSAGE...: a timestamped line on stderr, so stdout stays clean for what a script prints on purpose.
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

die() { log "error: $*"; exit 1; }

# The image corpora: ../shared/corpora beside the clone unless IMGPIPE_CORPORA_DIR says otherwise.
corpora_dir() {
  local dir="${IMGPIPE_CORPORA_DIR:-$IMGPIPE_ROOT/../shared/corpora}"
  [[ -d $dir/valid && -d $dir/corrupt && -d $dir/exif ]] ||
    die "image corpora not found at $dir (expected valid/, corrupt/, exif/); set IMGPIPE_CORPORA_DIR"
  (cd "$dir" && pwd)
}

# ccache keyed on paths relative to the clone, so a fresh clone in another folder (as CI makes) still hits the
# cache filled by earlier builds of the same sources.
use_ccache() {
  export CCACHE_BASEDIR="$IMGPIPE_ROOT"
  export CCACHE_NOHASHDIR=1
}

# Runs a command as root: directly when we are root, through sudo otherwise.
as_root() {
  if [[ $EUID -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root (or sudo) to run: $*"
  fi
}

# fetch_crate CRATE VERSION SHA256 WORKDIR: fetches one Rust package through cargo (which knows the registry) and
# prints the path of its .crate file (a gzipped tar) after checking it against SHA256, so a changed package is
# refused. Used for C sources that Rust packages bundle (scripts/fetch-sqlcipher, scripts/fetch-librdkafka).
fetch_crate() {
  local crate=$1 version=$2 sha256=$3 work=$4
  # rustup installs cargo into ~/.cargo/bin, which a non-login shell (CI) may not have on PATH.
  command -v cargo >/dev/null 2>&1 || [[ ! -x ${CARGO_HOME:-$HOME/.cargo}/bin/cargo ]] ||
    PATH=${CARGO_HOME:-$HOME/.cargo}/bin:$PATH
  command -v cargo >/dev/null 2>&1 || die "cargo not found; run scripts/install-deps (it installs Debian's cargo)"
  log "fetching $crate $version through cargo"
  mkdir -p "$work/fetch/src"
  : >"$work/fetch/src/lib.rs"
  cat >"$work/fetch/Cargo.toml" <<TOML
[package]
name = "imgpipe-fetch"
version = "0.0.0"
edition = "2021"

[dependencies]
$crate = { version = "=$version", default-features = false }
TOML
  (cd "$work/fetch" && cargo fetch --quiet) || die "cargo fetch of $crate $version failed"
  local cargo_home=${CARGO_HOME:-$HOME/.cargo} package actual
  package=$(find "$cargo_home/registry/cache" -name "$crate-$version.crate" -print -quit 2>/dev/null || true)
  [[ -n $package ]] || die "cargo fetched $crate $version but its package is not under $cargo_home/registry/cache"
  actual=$(sha256sum "$package" | cut -d' ' -f1)
  [[ $actual == "$sha256" ]] || die "$package has SHA-256 $actual, expected $sha256; refusing it"
  echo "$package"
}
