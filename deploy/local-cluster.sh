#!/usr/bin/env bash
# A two-node mailshare cluster on this machine, for trying mailshare out:
# one coordinator (embedded etcd), two Dovecot backends sharing one mail
# root, and a mailshare gateway in front of each, serving two tenants:
# acme (domain acme.test: alice, bob, carol) and globex (globex.test: dave,
# erin). Users log in as name@domain (password: the name followed by
# "-pw"); a name without a domain is acme's. alice is placed on n1 and bob
# on n2, so that bob reading alice's folder crosses nodes. Ctrl-C (or
# SIGTERM) stops everything; the data stays in DIR for the next start.
# Each gateway also takes POP3 and mail delivery by LMTP, routed like IMAP.
#
#   bash deploy/local-cluster.sh [DIR]          (default ./.mailshare-cluster; run as root)
#
# Ports (override through the environment): COORDINATOR=127.0.0.1:7400,
# GATEWAY1=127.0.0.1:1143, GATEWAY2=127.0.0.1:1144 (IMAP),
# GATEWAY1_POP3=127.0.0.1:1110, GATEWAY2_POP3=127.0.0.1:1111,
# GATEWAY1_LMTP=127.0.0.1:2424, GATEWAY2_LMTP=127.0.0.1:2425,
# DOVECOT1=127.0.0.1:10143, DOVECOT2=127.0.0.1:10144 (IMAP),
# DOVECOT1_POP3=127.0.0.1:10110, DOVECOT2_POP3=127.0.0.1:10111,
# DOVECOT1_LMTP=127.0.0.1:10024, DOVECOT2_LMTP=127.0.0.1:10025,
# and Prometheus /metrics: COORDINATOR_HTTP=127.0.0.1:7480,
# GATEWAY1_METRICS=127.0.0.1:9481, GATEWAY2_METRICS=127.0.0.1:9482 (the
# targets of deploy/prometheus/prometheus.yml).
# MAILSHARE_DOVECOT_PREFIX=/opt/dovecot-2.4 runs the Dovecot installed there (its sbin/dovecot)
# instead of the one on PATH, with a configuration in its syntax (2.3 or 2.4).
set -euo pipefail

DIR=$(realpath -m "${1:-.mailshare-cluster}")
COORDINATOR=${COORDINATOR:-127.0.0.1:7400}
GATEWAY1=${GATEWAY1:-127.0.0.1:1143}
GATEWAY2=${GATEWAY2:-127.0.0.1:1144}
DOVECOT1=${DOVECOT1:-127.0.0.1:10143}
DOVECOT2=${DOVECOT2:-127.0.0.1:10144}
GATEWAY1_POP3=${GATEWAY1_POP3:-127.0.0.1:1110}
GATEWAY2_POP3=${GATEWAY2_POP3:-127.0.0.1:1111}
GATEWAY1_LMTP=${GATEWAY1_LMTP:-127.0.0.1:2424}
GATEWAY2_LMTP=${GATEWAY2_LMTP:-127.0.0.1:2425}
DOVECOT1_POP3=${DOVECOT1_POP3:-127.0.0.1:10110}
DOVECOT2_POP3=${DOVECOT2_POP3:-127.0.0.1:10111}
DOVECOT1_LMTP=${DOVECOT1_LMTP:-127.0.0.1:10024}
DOVECOT2_LMTP=${DOVECOT2_LMTP:-127.0.0.1:10025}
COORDINATOR_HTTP=${COORDINATOR_HTTP:-127.0.0.1:7480}
GATEWAY1_METRICS=${GATEWAY1_METRICS:-127.0.0.1:9481}
GATEWAY2_METRICS=${GATEWAY2_METRICS:-127.0.0.1:9482}

die() { echo "local-cluster: $*" >&2; exit 1; }
DOVECOT=dovecot
[[ -n ${MAILSHARE_DOVECOT_PREFIX:-} ]] && DOVECOT=$MAILSHARE_DOVECOT_PREFIX/sbin/dovecot
for cmd in mailshare "$DOVECOT" openssl; do command -v "$cmd" >/dev/null || die "$cmd not found (run: bash scripts/setup.sh)"; done
# 2.4 refuses 2.3's settings and the other way round.
DOVECOT_24=no
[[ $("$DOVECOT" --version) =~ ^2\.[4-9] ]] && DOVECOT_24=yes
[ "$(id -u)" = 0 ] || die "run as root: Dovecot stores the mail as user nobody"

mkdir -p "$DIR/mail" "$DIR/n1" "$DIR/n2"
chmod 755 "$DIR" "$DIR/n1" "$DIR/n2"
chown nobody:nogroup "$DIR/mail"
[ -s "$DIR/master.secret" ] || openssl rand -hex 16 > "$DIR/master.secret"
chmod 600 "$DIR/master.secret"
MASTER_PASSWORD=$(cat "$DIR/master.secret")

pids=()
dovecot_confs=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  for conf in "${dovecot_confs[@]}"; do "$DOVECOT" -c "$conf" stop 2>/dev/null || true; done
  echo "local-cluster: stopped"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

# One Dovecot per node. The settings mailshare needs: a master user for the
# gateways (auth_master_user_separator), "/" as separator, trust in the
# gateways' addresses so they can pass the client's address on, and room for
# the readers of a shared folder: each opens a connection as the folder's
# owner, from the reader's address (a team behind one NAT address counts
# against one owner+address pair), so the per user+address limit is raised.
# Every session is one Dovecot process: process_limit bounds them all.
NOBODY_UID=$(id -u nobody)
NOGROUP_GID=$(getent group nogroup | cut -d: -f3)
start_dovecot() { # name imap-host:port pop3-port lmtp-port
  local name=$1 host=${2%:*} port=${2##*:} pop3=$3 lmtp=$4 dir="$DIR/$1"
  mkdir -p "$dir/run" "$dir/state"
  printf 'gateway:{PLAIN}%s\n' "$MASTER_PASSWORD" > "$dir/master.passwd"
  # A multi-domain Dovecot as any: users named user@domain (the tenants' primary domains), in
  # one passwd-file for logins and the userdb (so LMTP refuses mail to names nobody has).
  : > "$dir/users.passwd"
  for u in alice@acme.test bob@acme.test carol@acme.test dave@globex.test erin@globex.test; do
    printf '%s:{PLAIN}%s-pw:%s:%s::%s::\n' "$u" "${u%@*}" "$NOBODY_UID" "$NOGROUP_GID" "$DIR/mail/$u" >> "$dir/users.passwd"
  done
  chmod 644 "$dir/master.passwd" "$dir/users.passwd"
  # The settings both versions name alike, then each version's own (2.4 refuses 2.3's and the
  # other way round; its first line must be dovecot_config_version).
  local conf=$dir/dovecot.conf
  if [[ $DOVECOT_24 == yes ]]; then
    printf 'dovecot_config_version = 2.4.4\ndovecot_storage_version = 2.4.4\n' > "$conf"
  else
    : > "$conf"
  fi
  cat >> "$conf" <<CONF
base_dir = $dir/run
state_dir = $dir/state
instance_name = mailshare-$name-$port
log_path = $dir/dovecot.log
protocols = imap pop3 lmtp
listen = $host
ssl = no
auth_mechanisms = plain
login_trusted_networks = 127.0.0.0/8
mail_uid = nobody
mail_gid = nogroup
first_valid_uid = 1
auth_master_user_separator = *
namespace inbox {
  inbox = yes
  separator = /
}
protocol imap {
  mail_max_userip_connections = 1000
}
protocol pop3 {
  mail_max_userip_connections = 100
}
# LMTP: mail delivered by the gateways (each recipient by the node that holds the user).
postmaster_address = postmaster@acme.test
hostname = $name.local-cluster
service imap {
  process_limit = 4096
}
CONF
  # Dovecot's high-performance login mode: a login process that already runs greets in well under a
  # millisecond, where a new one per connection (the default) takes ~9 ms, ~85 ms on a busy node, and
  # the gateway's logins wait for that greeting. Its clients are the gateways, which parse and rebuild
  # every command (README: Deployment). 2.3 calls it service_count = 0, 2.4 restart_request_count.
  local reuse="service_count = 0" lmtp_listen="address = ${lmtp%:*}"
  if [[ $DOVECOT_24 == yes ]]; then
    reuse="restart_request_count = unlimited"
    lmtp_listen="listen = ${lmtp%:*}"
    cat >> "$conf" <<CONF
auth_allow_cleartext = yes
mail_driver = maildir
mail_path = $DIR/mail/%{user}
mail_home = $DIR/mail/%{user}
passdb master {
  driver = passwd-file
  passwd_file_path = $dir/master.passwd
  master = yes
}
passdb users {
  driver = passwd-file
  passwd_file_path = $dir/users.passwd
}
userdb users {
  driver = passwd-file
  passwd_file_path = $dir/users.passwd
}
CONF
  else
    cat >> "$conf" <<CONF
disable_plaintext_auth = no
mail_location = maildir:$DIR/mail/%u
passdb {
  driver = passwd-file
  args = $dir/master.passwd
  master = yes
}
passdb {
  driver = passwd-file
  args = $dir/users.passwd
}
userdb {
  driver = passwd-file
  args = $dir/users.passwd
  default_fields = uid=nobody gid=nogroup home=$DIR/mail/%u
}
CONF
  fi
  cat >> "$conf" <<CONF
service imap-login {
  $reuse
  process_min_avail = 2
  inet_listener imap {
    port = $port
  }
  inet_listener imaps {
    port = 0
  }
}
service pop3-login {
  $reuse
  process_min_avail = 1
  inet_listener pop3 {
    port = ${pop3##*:}
  }
  inet_listener pop3s {
    port = 0
  }
}
service lmtp {
  inet_listener lmtp {
    $lmtp_listen
    port = ${lmtp##*:}
  }
}
CONF
  # Dovecot's auth process runs as user dovecot: every directory above must let it through.
  if command -v runuser >/dev/null && id dovecot >/dev/null 2>&1 && ! runuser -u dovecot -- test -r "$dir/users.passwd"; then
    die "user dovecot cannot read $dir/users.passwd: give the directories above $DIR o+x (e.g. chmod 755)"
  fi
  "$DOVECOT" -c "$dir/dovecot.conf" stop 2>/dev/null || true
  "$DOVECOT" -c "$dir/dovecot.conf" || die "Dovecot $name did not start (see $dir/dovecot.log)"
  dovecot_confs+=("$dir/dovecot.conf")
}

wait_for() { # file pattern what
  for _ in $(seq 1 200); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  die "$3 did not start (see $1)"
}

start_dovecot n1 "$DOVECOT1" "$DOVECOT1_POP3" "$DOVECOT1_LMTP"
start_dovecot n2 "$DOVECOT2" "$DOVECOT2_POP3" "$DOVECOT2_LMTP"

mailshare server --data-dir "$DIR/server" --listen "$COORDINATOR" --http-listen "$COORDINATOR_HTTP" --log-level warn > "$DIR/server.log" 2>&1 &
pids+=($!)
wait_for "$DIR/server.log" "listening on" "the coordinator"
export MAILSHARE_CREDENTIALS="$DIR/server/credentials.json" MAILSHARE_ADDR="$COORDINATOR"
# Two tenants, each with its login domain (adding a domain a tenant has already changes nothing).
for t in acme:acme.test globex:globex.test; do
  mailshare tenant get "${t%%:*}" >/dev/null 2>&1 || mailshare tenant create "${t%%:*}" >/dev/null
  mailshare tenant domain add "${t%%:*}" "${t#*:}" >/dev/null
done

# The node token of a gateway, kept in DIR/NODE/node.token (0600) and reused on the next start
# while the coordinator still knows it; a new one is minted only when it does not.
node_token() { # name
  local file="$DIR/$1/node.token" id
  if [ -s "$file" ]; then
    id=$(sed -n 's/^mst_\([0-9a-f]\{16\}\)_.*/\1/p' "$file")
    if [ -n "$id" ] && mailshare token list -o json | node -e 'let s="";process.stdin.on("data",c=>s+=c).on("end",()=>process.exit(JSON.parse(s).tokens.some(t=>t.id===process.argv[1])?0:1))' "$id"; then
      cat "$file"
      return
    fi
  fi
  (umask 077; mailshare token create --role node --node "$1" --tenants acme,globex --description "local-cluster gateway $1" > "$file")
  cat "$file"
}

start_gateway() { # name dovecot listen dovecot-pop3 listen-pop3 dovecot-lmtp listen-lmtp metrics
  # One token per node: a node token can act for its own node (and tenant) only.
  local token
  token=$(node_token "$1")
  MAILSHARE_TOKEN=$token MAILSHARE_MASTER_PASSWORD=$MASTER_PASSWORD \
    mailshare gateway --node "$1" --backend "$2" --tenant acme --listen "$3" --coordinators "$COORDINATOR" \
      --backend-pop3 "$4" --listen-pop3 "$5" --backend-lmtp "$6" --listen-lmtp "$7" --metrics-listen "$8" \
      --master-user gateway --log-level warn > "$DIR/$1/gateway.log" 2>&1 &
  pids+=($!)
  wait_for "$DIR/$1/gateway.log" "listening on" "gateway $1"
}
start_gateway n1 "$DOVECOT1" "$GATEWAY1" "$DOVECOT1_POP3" "$GATEWAY1_POP3" "$DOVECOT1_LMTP" "$GATEWAY1_LMTP" "$GATEWAY1_METRICS"
start_gateway n2 "$DOVECOT2" "$GATEWAY2" "$DOVECOT2_POP3" "$GATEWAY2_POP3" "$DOVECOT2_LMTP" "$GATEWAY2_LMTP" "$GATEWAY2_METRICS"

# alice on n1, bob on n2 (placement alone may put both on one node): moves after the start.
place() { # user node
  local at
  at=$(mailshare user locate acme "$1" --assign -o json | node -e 'let s="";process.stdin.on("data",c=>s+=c).on("end",()=>console.log(JSON.parse(s).node))')
  [ "$at" = "$2" ] || mailshare user move acme "$1" --to "$2" >/dev/null || die "could not place $1 on $2"
}
place alice n1
place bob n2

cat <<INFO
local-cluster: ready
  coordinator  $COORDINATOR   (CLI: export MAILSHARE_CREDENTIALS=$MAILSHARE_CREDENTIALS)
  metrics      coordinator http://$COORDINATOR_HTTP/metrics, gateways http://$GATEWAY1_METRICS/metrics, http://$GATEWAY2_METRICS/metrics
  gateway n1   IMAP $GATEWAY1  POP3 $GATEWAY1_POP3  LMTP $GATEWAY1_LMTP   -> Dovecot $DOVECOT1 (POP3 $DOVECOT1_POP3, LMTP $DOVECOT1_LMTP)
  gateway n2   IMAP $GATEWAY2  POP3 $GATEWAY2_POP3  LMTP $GATEWAY2_LMTP   -> Dovecot $DOVECOT2 (POP3 $DOVECOT2_POP3, LMTP $DOVECOT2_LMTP)
  tenant acme    alice@acme.test (on n1), bob@acme.test (on n2), carol@acme.test
  tenant globex  dave@globex.test, erin@globex.test      (passwords: name-pw, e.g. alice-pw)
  logs         $DIR/server.log, $DIR/n1/, $DIR/n2/
Ctrl-C stops the cluster.
INFO
wait
