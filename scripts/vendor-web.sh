#!/usr/bin/env bash
# Refresh the fleet web view's JavaScript and CSS from the npm registry's tarballs:
# pinned versions, each tarball checked against its SHA-256 before anything is unpacked,
# the files the pages load and each package's licence copied to cloud/web/static/vendor/.
# No build step and no CDN: the view runs with no internet (docs/cloud.md).
#   scripts/vendor-web.sh            fetch, check and copy
# To move to a new version: change it below, run once, read the SHA-256 it prints in the
# refusal, check it against `npm view NAME@VERSION dist` elsewhere, and pin it.
set -euo pipefail
cd "$(dirname "$0")/.."

REGISTRY=${NPM_REGISTRY:-https://registry.npmjs.org}
TARGET=cloud/web/static/vendor
# name version sha256-of-tarball files-to-copy (package-relative path:vendored name)
PACKAGES=(
    # htmx 2.0.x: npm's latest is 4.x, whose SSE extension speaks another syntax.
    "htmx.org 2.0.11 165a2655073e9e6e55e307a7c74e8ebcdb76afb7701f9c16cfd106a13add408e dist/htmx.min.js:htmx.min.js LICENSE:htmx.LICENSE"
    "htmx-ext-sse 2.2.4 90b46f5ab915ba2f64e6348448c8dba509277a47e15c125ffb65754eb4f6b5dc dist/sse.min.js:htmx-ext-sse.min.js LICENSE:htmx-ext-sse.LICENSE"
    "uplot 1.6.32 4b8a8191e425658e3ea8c8c1314b0fc679c861ee3a1af2b20c7b16ba50b5133d dist/uPlot.iife.min.js:uPlot.iife.min.js dist/uPlot.min.css:uPlot.min.css LICENSE:uPlot.LICENSE"
)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$TARGET"
versions=()
for entry in "${PACKAGES[@]}"; do
    read -r name version sha256 files <<<"$entry"
    tarball="$work/$name-$version.tgz"
    curl --fail --silent --show-error --location --proto '=https' \
        -o "$tarball" "$REGISTRY/$name/-/$name-$version.tgz"
    actual=$(sha256sum "$tarball" | cut -d' ' -f1)
    if [ "$actual" != "$sha256" ]; then
        echo "$name $version: SHA-256 $actual, expected $sha256: not used" >&2
        exit 1
    fi
    mkdir -p "$work/$name"
    tar -xzf "$tarball" -C "$work/$name"
    for pair in $files; do
        cp "$work/$name/package/${pair%%:*}" "$TARGET/${pair##*:}"
    done
    versions+=("$name $version sha256:$sha256")
done
printf '%s\n' "# Written by scripts/vendor-web.sh: package, version, tarball SHA-256." \
    "${versions[@]}" >"$TARGET/VERSIONS"
echo "vendored into $TARGET:"
cat "$TARGET/VERSIONS"
