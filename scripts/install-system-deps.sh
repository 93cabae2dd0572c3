#!/usr/bin/env bash
# Debian packages: what MuJoCo needs to render offscreen on the CPU (Mesa llvmpipe through EGL or
# OSMesa), the message build's compilers, and the viewer test's browser and Node.js. Installs them
# with apt-get when missing and running as root; otherwise says what to run.
set -euo pipefail
# opencv-doc carries real stereo chessboard pairs the geometry tests calibrate against.
# chromium runs Foxglove Studio headless in the viewer test (test/test_viewer.py); node and npm
# install and drive it (test/viewer/package.json).
packages=(libosmesa6 libegl1 libegl-mesa0 libgl1-mesa-dri cmake g++ opencv-doc chromium)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# Node.js may come from elsewhere (NodeSource's nodejs bundles npm and conflicts with Debian's
# npm package): ask apt only for what is not on the PATH.
command -v node > /dev/null || missing+=(nodejs)
command -v npm > /dev/null || missing+=(npm)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "Missing system packages: ${missing[*]}" >&2
  echo "Install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "Installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
