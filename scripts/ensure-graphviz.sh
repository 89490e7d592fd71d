#!/usr/bin/env bash
# Make sure Graphviz's `dot` binary is present: rendering graphs to SVG/PNG/PDF needs it.
# The Python `graphviz` package alone only writes DOT source.
set -euo pipefail
if command -v dot >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Debian's graphviz package (for the 'dot' binary)..."
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null
else
  echo "warning: Graphviz's 'dot' is missing; ppdgm will write DOT source instead of pictures." >&2
  echo "         Install it with your package manager, e.g. 'sudo apt-get install graphviz'" >&2
  echo "         or 'brew install graphviz', then run this again." >&2
fi
