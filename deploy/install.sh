#!/usr/bin/env bash
# Install liver-node as a systemd service from this repository, in one go:
#   sudo deploy/install.sh            # from the repository root (or any folder: paths are relative to this file)
# Creates the liver-node system user, a virtual environment in /opt/liver-node/venv with the node installed,
# /etc/liver-node/config.toml (from deploy/config.systemd.toml, only if absent: upgrades keep your settings),
# the unit, and enables and starts it. Re-running it upgrades the software in place (see deploy/README.md).
# DESTDIR=/some/root installs into that root without touching the running system (packaging, tests);
# SKIP_VENV=1 skips the Python install; systemctl is only called when DESTDIR is empty.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
root="${DESTDIR:-}"
py="${PYTHON:-python3}"

install -d -m 0755 "$root/opt/liver-node" "$root/etc/systemd/system" "$root/usr/lib/sysusers.d"
install -m 0644 "$here/liver-node.sysusers" "$root/usr/lib/sysusers.d/liver-node.conf"
if [ -z "$root" ]; then
  systemd-sysusers /usr/lib/sysusers.d/liver-node.conf
fi
if [ "${SKIP_VENV:-0}" != 1 ]; then
  "$py" -m venv "$root/opt/liver-node/venv"
  "$root/opt/liver-node/venv/bin/pip" install --quiet --upgrade pip
  "$root/opt/liver-node/venv/bin/pip" install --quiet "$repo"
fi
rm -rf "$root/opt/liver-node/deploy"
cp -r "$here" "$root/opt/liver-node/deploy"
install -d -m 0750 "$root/etc/liver-node"
if [ ! -e "$root/etc/liver-node/config.toml" ]; then
  install -m 0640 "$here/config.systemd.toml" "$root/etc/liver-node/config.toml"
  echo "installed $root/etc/liver-node/config.toml: set your destinations in it"
else
  echo "kept the existing $root/etc/liver-node/config.toml"
fi
install -m 0644 "$here/liver-node.service" "$root/etc/systemd/system/liver-node.service"
if [ -z "$root" ]; then
  chgrp liver-node /etc/liver-node /etc/liver-node/config.toml
  # the state directory the unit's StateDirectory= would create, made now so the check below can see it
  install -d -o liver-node -g liver-node -m 0750 /var/lib/liver-node
  # checked as the service user, never as root: what it can read and write is what the service can
  runuser -u liver-node -- /opt/liver-node/venv/bin/liver-node check-config --config /etc/liver-node/config.toml || true
  systemd-analyze verify /etc/systemd/system/liver-node.service
  systemctl daemon-reload
  systemctl enable liver-node
  systemctl restart liver-node
  systemctl --no-pager status liver-node || true
fi
