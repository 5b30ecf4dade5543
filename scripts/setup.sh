#!/usr/bin/env bash
# Installs what mailshare needs on Debian 12 (root, Node 20) and builds it:
# Debian packages that are missing, npm dependencies, the build, and the
# `mailshare` command on PATH (npm link). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# A C compiler for the gateway's one native helper (TCP_QUICKACK; see src/native/).
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
# Dovecot: the IMAP, POP3 and LMTP backend the gateway fronts (the tests run real instances).
command -v dovecot >/dev/null 2>&1 || need+=(dovecot-imapd)
[[ -x /usr/lib/dovecot/pop3 ]] || need+=(dovecot-pop3d)
[[ -x /usr/lib/dovecot/lmtp ]] || need+=(dovecot-lmtpd)
# ManageSieve and submission: Dovecot's own proxies route them too (deploy/dovecot/proxy.conf).
[[ -x /usr/lib/dovecot/managesieve ]] || need+=(dovecot-managesieved dovecot-sieve)
[[ -x /usr/lib/dovecot/submission ]] || need+=(dovecot-submissiond)
# Lua passdb: Dovecot's own proxies ask mailshare where users live (deploy/dovecot/mailshare-route.lua).
[[ -f /usr/lib/dovecot/modules/auth/libauthdb_lua.so ]] || need+=(dovecot-auth-lua)
# promtool (Debian's prometheus package): the tests check every /metrics scrape and deploy/prometheus/ with it.
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# Chromium: the status page is tested in a real browser (driven by playwright-core from npm).
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# Python 3: the tests drive the gateway with real clients (imaplib, poplib, smtplib).
command -v python3 >/dev/null 2>&1 || need+=(python3)
# mbsync (isync): a real synchronizing client, kept connected through session migration in the tests.
command -v mbsync >/dev/null 2>&1 || need+=(isync)
if ((${#need[@]})); then
  echo "setup: installing ${need[*]}" >&2
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

node -e 'const [a,b]=process.versions.node.split(".").map(Number); if (a<20||(a===20&&b<19)) { console.error("setup: Node >= 20.19 required, found "+process.versions.node); process.exit(1) }'

echo "setup: npm ci" >&2
npm ci --no-audit --no-fund --loglevel=error
echo "setup: build" >&2
npm run --silent build
echo "setup: linking the mailshare command" >&2
npm link --no-audit --no-fund --loglevel=error >/dev/null
command -v mailshare >/dev/null || { echo "setup: mailshare is not on PATH (npm prefix -g: $(npm prefix -g))" >&2; exit 1; }
echo "setup: done ($(mailshare --version))" >&2
