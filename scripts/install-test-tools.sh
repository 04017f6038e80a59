#!/usr/bin/env bash
# Installs the third-party DICOM peers the test suite runs against (Debian packages):
# dcmtk (storescu/echoscu/storescp), dicom3tools (dciodvfy), Orthanc (PACS/TPS peer),
# plastimatch (independent RTSTRUCT rasteriser), systemd (systemd-analyze verify of the unit), chromium and
# chromium-driver (the dashboard's browser tests drive Debian's headless chromium through Selenium). Idempotent;
# needs root or sudo.
set -euo pipefail
pkgs=(dcmtk dicom3tools orthanc plastimatch systemd openssl chromium chromium-driver fonts-dejavu-core)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
# Keep package scripts from starting Orthanc as a system service: the tests start their own on loopback.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
