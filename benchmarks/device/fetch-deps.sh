#!/usr/bin/env bash
# Download the Debian packages of the C runtime's build headers (nlohmann-json, OpenSSL; about
# 2.7 MB) into .devdeps/ at the repository root, for a lent GPU machine that lacks them and has no
# network: carry .devdeps with the tree (it is ignored by git) and run.sh unpacks what is missing.
# Needs apt-get and a reachable Debian or Ubuntu mirror (this machine's).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
mkdir -p "$ROOT/.devdeps"
cd "$ROOT/.devdeps"
apt-get download nlohmann-json3-dev libssl-dev
ls -l "$ROOT/.devdeps"
