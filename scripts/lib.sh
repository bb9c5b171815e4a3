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
