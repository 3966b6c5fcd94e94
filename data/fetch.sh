#!/usr/bin/env bash
# Downloads the four MNIST files into data/mnist (or the directory given as the first argument)
# and checks the sha256 of their decompressed contents against data/SHA256SUMS.
#
# Usage: data/fetch.sh [DEST_DIR]
#
# Nothing is downloaded when the files are already present and verified in $ENGRAM_DATA or in
# DEST_DIR. Each file is tried from the mirrors in order; a download whose content does not match
# the official digest is deleted and the next mirror is tried.
#
# Environment (all optional):
#   ENGRAM_DATA                   a directory that may already hold the files
#   ENGRAM_MNIST_MIRRORS          space-separated base URLs replacing the default mirror list
#   ENGRAM_FETCH_CONNECT_TIMEOUT  seconds to wait for a connection (default 15)
#   ENGRAM_FETCH_MAX_TIME         seconds allowed for one download (default 300)
#
# The files are never committed: data/mnist/ is in .gitignore.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
sums="$here/SHA256SUMS"
dest="${1:-$here/mnist}"
files=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)
default_mirrors="https://ossci-datasets.s3.amazonaws.com/mnist/ https://storage.googleapis.com/cvdf-datasets/mnist/ http://yann.lecun.com/exdb/mnist/"
read -r -a mirrors <<<"${ENGRAM_MNIST_MIRRORS:-$default_mirrors}"
connect_timeout="${ENGRAM_FETCH_CONNECT_TIMEOUT:-15}"
max_time="${ENGRAM_FETCH_MAX_TIME:-300}"

die() {
  echo "fetch.sh: error: $*" >&2
  exit 1
}

[ -r "$sums" ] || die "cannot read $sums (the official digests)"

if command -v sha256sum >/dev/null 2>&1; then
  sha256() { sha256sum | cut -d' ' -f1; }
elif command -v shasum >/dev/null 2>&1; then
  sha256() { shasum -a 256 | cut -d' ' -f1; }
else
  die "neither sha256sum nor shasum is installed"
fi
command -v gzip >/dev/null 2>&1 || die "gzip is not installed"

# The official digest of the decompressed file $1.
expected() {
  awk -v n="$1" '$2 == n || $2 == "*" n { print $1 }' "$sums"
}

# The file holding $2 in directory $1: raw NAME first (as engram does), else NAME.gz.
file_in() {
  if [ -f "$1/$2" ]; then
    echo "$1/$2"
  elif [ -f "$1/$2.gz" ]; then
    echo "$1/$2.gz"
  else
    return 1
  fi
}

# The sha256 of the content of $1, decompressed if it is gzipped (gzip -f passes raw data through).
content_sha() {
  gzip -dcf -- "$1" | sha256
}

# Succeeds when file $2 in directory $1 is present and matches its digest; says why not otherwise.
file_ok() {
  local f actual want
  f="$(file_in "$1" "$2")" || {
    echo "  $2: missing"
    return 1
  }
  want="$(expected "$2")"
  actual="$(content_sha "$f")" || {
    echo "  $f: cannot decompress"
    return 1
  }
  if [ "$actual" != "$want" ]; then
    echo "  $f: sha256 $actual, expected $want"
    return 1
  fi
}

# Succeeds when directory $1 holds all four files, verified.
dir_ok() {
  local name ok=0
  [ -d "$1" ] || return 1
  for name in "${files[@]}"; do
    file_ok "$1" "$name" || ok=1
  done
  return "$ok"
}

for dir in "${ENGRAM_DATA:-}" "$dest"; do
  [ -n "$dir" ] || continue
  if report="$(dir_ok "$dir")"; then
    echo "MNIST is already present and verified in $dir: nothing to do."
    exit 0
  elif [ -d "$dir" ]; then
    echo "$dir does not hold verified MNIST files:"
    echo "$report"
  fi
done

if command -v curl >/dev/null 2>&1; then
  download() {
    curl --fail --location --silent --show-error \
      --connect-timeout "$connect_timeout" --max-time "$max_time" --output "$2" "$1"
  }
elif command -v wget >/dev/null 2>&1; then
  download() {
    if command -v timeout >/dev/null 2>&1; then
      timeout "$max_time" wget --quiet --timeout="$connect_timeout" --tries=1 --output-document="$2" "$1"
    else
      wget --quiet --timeout="$connect_timeout" --tries=1 --output-document="$2" "$1"
    fi
  }
else
  die "neither curl nor wget is installed: download the four .gz files by hand into $dest (see data/README.md)"
fi

mkdir -p "$dest"
part=""
trap '[ -z "$part" ] || rm -f -- "$part"' EXIT

failed=()
for name in "${files[@]}"; do
  if file_ok "$dest" "$name" >/dev/null; then
    echo "ok: $name (already present)"
    continue
  fi
  want="$(expected "$name")"
  done_this=0
  for mirror in "${mirrors[@]}"; do
    url="${mirror%/}/$name.gz"
    part="$dest/$name.gz.part"
    echo "fetching $url"
    if ! download "$url" "$part"; then
      echo "  download failed; trying the next mirror"
      rm -f -- "$part"
      continue
    fi
    actual="$(gzip -dc -- "$part" | sha256)" || actual="(not a valid gzip file)"
    if [ "$actual" != "$want" ]; then
      echo "  sha256 of the decompressed file is $actual, expected $want: deleted; trying the next mirror"
      rm -f -- "$part"
      continue
    fi
    # A stale raw file would be picked before the .gz: it failed the check above, so remove it.
    rm -f -- "$dest/$name"
    mv -f -- "$part" "$dest/$name.gz"
    part=""
    echo "  ok: $dest/$name.gz"
    done_this=1
    break
  done
  [ "$done_this" = 1 ] || failed+=("$name")
done

if [ "${#failed[@]}" -gt 0 ]; then
  {
    echo "fetch.sh: error: could not get a verified copy of: ${failed[*]}"
    echo "  mirrors tried, in order: ${mirrors[*]}"
    echo "  Download the .gz files by hand from any MNIST mirror into $dest (or any directory"
    echo "  and point ENGRAM_DATA or --data-dir at it); their decompressed sha256 must match $sums."
  } >&2
  exit 1
fi
echo "MNIST is ready in $dest"
