#!/bin/bash
# A stand-in for the workspace runtime's git credential helper
# (workspace/scripts/molecule-git-token-helper.sh in Molecule-AI/molecule-core), sending what it
# sends and printing what it prints, so a test can run `git credential fill` against the
# platform. Git calls it with `get`, `store` or `erase`; only `get` answers.
set -euo pipefail

PLATFORM_URL="${PLATFORM_URL:-http://host.docker.internal:8080}"
TOKEN_FILE="${CONFIGS_DIR:-/configs}/.auth_token"
CACHE_DIR="${HOME:=/home/agent}/.molecule-token-cache"
CACHE_TOKEN="${CACHE_DIR}/gh_installation_token"
CACHE_EXPIRY="${CACHE_DIR}/gh_installation_token_expiry"
# The runtime keeps a token for 50 minutes.
CACHE_TTL=3000

if [ -n "${WORKSPACE_ID:-}" ]; then
    ENDPOINT="${PLATFORM_URL}/workspaces/${WORKSPACE_ID}/github-installation-token"
else
    ENDPOINT="${PLATFORM_URL}/admin/github-installation-token"
fi

cached() {
    [ -f "${CACHE_TOKEN}" ] && [ -f "${CACHE_EXPIRY}" ] || return 1
    [ "$(date +%s)" -lt "$(tr -d '[:space:]' < "${CACHE_EXPIRY}")" ] || return 1
    tr -d '[:space:]' < "${CACHE_TOKEN}"
}

remember() {
    mkdir -p "${CACHE_DIR}" && chmod 700 "${CACHE_DIR}"
    (umask 077; printf '%s' "$1" > "${CACHE_TOKEN}"; printf '%s' "$(( $(date +%s) + CACHE_TTL ))" > "${CACHE_EXPIRY}")
}

from_platform() {
    [ -f "${TOKEN_FILE}" ] || return 1
    local bearer body token
    bearer=$(tr -d '[:space:]' < "${TOKEN_FILE}")
    body=$(curl -sf -H "Authorization: Bearer ${bearer}" -H "Accept: application/json" \
        --max-time 10 "${ENDPOINT}") || return 1
    token=$(echo "${body}" | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
    [ -n "${token}" ] || return 1
    echo "${token}"
}

case "${1:-get}" in
    get)
        token=$(cached) || { token=$(from_platform) && remember "${token}"; } \
            || token="${GITHUB_TOKEN:-${GH_TOKEN:-}}"
        [ -n "${token}" ] || exit 1
        printf 'username=x-access-token\npassword=%s\n\n' "${token}"
        ;;
    store|erase) ;;
esac
