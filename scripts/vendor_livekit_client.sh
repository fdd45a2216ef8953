#!/usr/bin/env bash
# Vendor livekit-client's UMD bundle into the web console (served locally: no CDN).
#
#   scripts/vendor_livekit_client.sh           fetch the pinned version from npm, copy it in
#   scripts/vendor_livekit_client.sh --check   fetch it and verify the committed copy matches
#
# npm verifies the tarball against the registry's integrity hash; the file is copied byte for
# byte and its sha256 is recorded in vendor/livekit-client.VERSION.
set -euo pipefail

VERSION=2.23.0
FILE=livekit-client.umd.js
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/voicectl/web/static/vendor"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

(cd "$TMP" && npm pack --silent "livekit-client@$VERSION" >/dev/null)
tar -xzf "$TMP/livekit-client-$VERSION.tgz" -C "$TMP"
LICENSE="$(node -p "require('$TMP/package/package.json').license")"
[ "$LICENSE" = "Apache-2.0" ] || { echo "unexpected license: $LICENSE" >&2; exit 1; }
SHA="$(sha256sum "$TMP/package/dist/$FILE" | cut -d' ' -f1)"

if [ "${1:-}" = "--check" ]; then
    got="$(sha256sum "$DEST/$FILE" | cut -d' ' -f1)"
    if [ "$got" != "$SHA" ]; then
        echo "$DEST/$FILE differs from livekit-client@$VERSION ($got != $SHA)" >&2
        exit 1
    fi
    echo "ok: $FILE is livekit-client@$VERSION ($SHA)"
    exit 0
fi

mkdir -p "$DEST"
cp "$TMP/package/dist/$FILE" "$DEST/$FILE"
cp "$TMP/package/LICENSE" "$DEST/livekit-client.LICENSE"
cat > "$DEST/livekit-client.VERSION" <<INFO
package: livekit-client
version: $VERSION
license: $LICENSE (see livekit-client.LICENSE; the bundle also carries its MIT/BSD dependencies)
file: dist/$FILE
sha256: $SHA
made by: scripts/vendor_livekit_client.sh
INFO
echo "vendored livekit-client@$VERSION into $DEST ($(du -h "$DEST/$FILE" | cut -f1))"
