#!/usr/bin/env bash
# A RabbitMQ cluster on loopback, beside this machine's own broker (rabbit@localhost:5672, never touched):
# CLUSTER_NODES nodes (3) named ${CLUSTER_PREFIX}1@localhost... (q1@localhost, q2@localhost, q3@localhost),
# started from this machine's rabbitmq-server, each with its own ports, data, logs and configuration under
# CLUSTER_DIR (var/rabbitmq-cluster/, git-ignored), and the machine's Erlang cookie (/var/lib/rabbitmq).
#
#   scripts/rabbitmq-cluster.sh start             start the nodes that are down, cluster them, wait; prints
#                                                 `export BROKER_URL=...` and `export RABBITMQ_MANAGEMENT_URL=...`
#                                                 (so: eval "$(scripts/rabbitmq-cluster.sh start)")
#   scripts/rabbitmq-cluster.sh stop              stop every node and remove its data
#   scripts/rabbitmq-cluster.sh status            the cluster's status, as the first running node sees it
#   scripts/rabbitmq-cluster.sh url               the BROKER_URL of the nodes (";"-separated), nothing started
#   scripts/rabbitmq-cluster.sh stop-node N       stop node N (1, q1 or q1@localhost) and keep its data
#   scripts/rabbitmq-cluster.sh start-node N      start node N again (it rejoins the cluster from its data)
#
# Node i listens for AMQP on CLUSTER_BASE_PORT+i (5681...), for the management UI/API on
# CLUSTER_BASE_PORT+10000+i (15681..., CLUSTER_MANAGEMENT=false leaves the plugin off) and for Erlang
# distribution on CLUSTER_BASE_PORT+20000+i (25681...), all on 127.0.0.1. tests/cluster/helpers.py drives this script.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTER_NODES=${CLUSTER_NODES:-3}
CLUSTER_PREFIX=${CLUSTER_PREFIX:-q}
CLUSTER_BASE_PORT=${CLUSTER_BASE_PORT:-5680}
CLUSTER_DIR=${CLUSTER_DIR:-$ROOT/var/rabbitmq-cluster}
CLUSTER_MANAGEMENT=${CLUSTER_MANAGEMENT:-true}
# Seconds to wait for the nodes to start and to cluster.
CLUSTER_TIMEOUT=${CLUSTER_TIMEOUT:-120}
# Debian's scripts, run directly: /usr/sbin/rabbitmq-server would log into the machine's /var/log/rabbitmq.
RABBITMQ_BIN=${RABBITMQ_BIN:-/usr/lib/rabbitmq/bin}
# The home of the Erlang cookie that the nodes and rabbitmqctl share with the machine's broker.
RABBITMQ_HOME=/var/lib/rabbitmq

say() { echo "rabbitmq-cluster: $*" >&2; }
die() { say "$*"; exit 1; }

node_name() { echo "${CLUSTER_PREFIX}$1@localhost"; }
node_dir() { echo "$CLUSTER_DIR/${CLUSTER_PREFIX}$1"; }
amqp_port() { echo $((CLUSTER_BASE_PORT + $1)); }
management_port() { echo $((CLUSTER_BASE_PORT + 10000 + $1)); }
dist_port() { echo $((CLUSTER_BASE_PORT + 20000 + $1)); }
first_name() { node_name 1; }

broker_url() {
  local i urls=()
  for i in $(seq 1 "$CLUSTER_NODES"); do urls+=("amqp://guest:guest@127.0.0.1:$(amqp_port "$i")"); done
  (IFS=";"; echo "${urls[*]}")
}

# A node's index from 2, q2 or q2@localhost.
node_index() {
  local given=${1%@localhost}
  given=${given#"$CLUSTER_PREFIX"}
  [[ $given =~ ^[0-9]+$ ]] && ((given >= 1 && given <= CLUSTER_NODES)) || die "no node $1 (1..$CLUSTER_NODES)"
  echo "$given"
}

# rabbitmqctl / rabbitmq-diagnostics against node i, with the shared cookie and nothing else from this shell.
tool() {
  local tool=$1 i=$2 seconds=$3
  shift 3
  timeout "$seconds" env -i PATH="$PATH" HOME="$RABBITMQ_HOME" LANG=C.UTF-8 LC_ALL=C.UTF-8 \
    ERL_EPMD_ADDRESS=127.0.0.1 RABBITMQ_CONF_ENV_FILE="$(node_dir "$i")/rabbitmq-env.conf" \
    "$RABBITMQ_BIN/$tool" -q -n "$(node_name "$i")" "$@"
}
ctl() { local i=$1; shift; tool rabbitmqctl "$i" 60 "$@"; }
is_up() { tool rabbitmq-diagnostics "$1" 20 ping >/dev/null 2>&1; }

# The nodes that node i lists under `key` (running_nodes, disk_nodes) of its cluster_status, one a line.
listed() {
  ctl "$1" cluster_status --formatter json 2>/dev/null \
    | grep -o "\"$2\":\[[^]]*\]" | grep -o '"[^"]*@[^"]*"' | tr -d '"' || true
}

write_config() {
  local i=$1 dir
  dir=$(node_dir "$i")
  mkdir -p "$dir/mnesia" "$dir/log"
  {
    echo "listeners.tcp.local = 127.0.0.1:$(amqp_port "$i")"
    echo "management.tcp.ip = 127.0.0.1"
    echo "management.tcp.port = $(management_port "$i")"
    # A node cut off from the majority pauses rather than serving a split brain.
    echo "cluster_partition_handling = pause_minority"
    echo "cluster_name = ${CLUSTER_PREFIX}-cluster"
    echo "log.console = false"
    echo "log.file.level = info"
  } >"$dir/rabbitmq.conf"
  if [[ $CLUSTER_MANAGEMENT == true ]]; then echo "[rabbitmq_management]." >"$dir/enabled_plugins"
  else echo "[]." >"$dir/enabled_plugins"; fi
  # This node's own: /etc/rabbitmq/rabbitmq-env.conf sets NODENAME=rabbit@localhost, which would otherwise win.
  echo "# $(node_name "$i"): scripts/rabbitmq-cluster.sh" >"$dir/rabbitmq-env.conf"
  # The server drops to the rabbitmq user: it must own its folders.
  if [[ $(id -u) == 0 ]]; then chown -R rabbitmq:rabbitmq "$dir"; fi
}

launch() {
  local i=$1 dir
  dir=$(node_dir "$i")
  write_config "$i"
  local as=()
  if [[ $(id -u) == 0 ]]; then as=(runuser -u rabbitmq --); fi
  say "starting $(node_name "$i") (AMQP 127.0.0.1:$(amqp_port "$i"), data $dir)"
  # In a subshell for its own working folder; the node alone in the background, holding none of our output.
  (cd "$dir"
   setsid "${as[@]}" env -i PATH="$PATH" HOME="$RABBITMQ_HOME" LANG=C.UTF-8 LC_ALL=C.UTF-8 \
    RABBITMQ_NODENAME="$(node_name "$i")" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT="$(amqp_port "$i")" RABBITMQ_DIST_PORT="$(dist_port "$i")" \
    RABBITMQ_MNESIA_BASE="$dir/mnesia" RABBITMQ_LOG_BASE="$dir/log" RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" RABBITMQ_PID_FILE="$dir/node.pid" \
    RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf" ERL_EPMD_ADDRESS=127.0.0.1 \
    ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}" \
    "$RABBITMQ_BIN/rabbitmq-server" >>"$dir/console.log" 2>&1 </dev/null &
   echo $! >"$dir/launcher.pid")
}

show_log() {
  local dir
  dir=$(node_dir "$1")
  say "$(node_name "$1") did not come up; its console and log:"
  tail -n 40 "$dir/console.log" "$dir"/log/*.log 2>/dev/null >&2 || true
}

# Wait until node i's RabbitMQ application has started (await_startup fails at once while its VM is not up).
await_node() {
  local i=$1 deadline=$((SECONDS + CLUSTER_TIMEOUT)) launcher
  launcher=$(cat "$(node_dir "$i")/launcher.pid" 2>/dev/null || true)
  until tool rabbitmqctl "$i" "$CLUSTER_TIMEOUT" await_startup --timeout "$CLUSTER_TIMEOUT" >/dev/null 2>&1; do
    if [[ -n $launcher ]] && ! kill -0 "$launcher" 2>/dev/null; then show_log "$i"; die "$(node_name "$i") exited"; fi
    ((SECONDS < deadline)) || { show_log "$i"; die "$(node_name "$i") did not start in ${CLUSTER_TIMEOUT}s"; }
    sleep 1
  done
}

start_node() {
  local i=$1
  if is_up "$i"; then say "$(node_name "$i") is already running"; else launch "$i"; fi
}

# A fresh node leaves its own one-node cluster for node 1's (the CLI's log lines shown only when it fails).
join() {
  local i=$1 step output
  say "joining $(node_name "$i") to $(first_name)"
  for step in stop_app reset "join_cluster $(first_name)" start_app; do
    # shellcheck disable=SC2086 # the step's words are its arguments
    output=$(ctl "$i" $step 2>&1) || die "$(node_name "$i"): rabbitmqctl $step failed: $output"
  done
  await_node "$i"
}

cmd_start() {
  local i missing deadline
  command -v "$RABBITMQ_BIN/rabbitmq-server" >/dev/null || die "no $RABBITMQ_BIN/rabbitmq-server: install rabbitmq-server"
  for i in $(seq 1 "$CLUSTER_NODES"); do start_node "$i"; done
  for i in $(seq 1 "$CLUSTER_NODES"); do await_node "$i"; done
  for i in $(seq 2 "$CLUSTER_NODES"); do
    listed 1 disk_nodes | grep -qx "$(node_name "$i")" || join "$i"
  done
  deadline=$((SECONDS + CLUSTER_TIMEOUT))
  while true; do
    missing=$(comm -23 <(for i in $(seq 1 "$CLUSTER_NODES"); do node_name "$i"; done | sort) <(listed 1 running_nodes | sort))
    [[ -z $missing ]] && break
    ((SECONDS < deadline)) || die "not clustered after ${CLUSTER_TIMEOUT}s; not running on $(first_name): $missing"
    sleep 1
  done
  say "$CLUSTER_NODES nodes running and clustered: $(listed 1 running_nodes | tr '\n' ' ')"
  echo "export BROKER_URL='$(broker_url)'"
  if [[ $CLUSTER_MANAGEMENT == true ]]; then
    echo "export RABBITMQ_MANAGEMENT_URL='http://guest:guest@127.0.0.1:$(management_port 1)'"
  fi
}

stop_node() {
  local i=$1 dir pid
  dir=$(node_dir "$i")
  [[ -d $dir ]] || return 0
  pid=$(cat "$dir/node.pid" 2>/dev/null || true)
  if is_up "$i"; then
    say "stopping $(node_name "$i")"
    # With the pid file, `stop` returns once the node's OS process has exited.
    ctl "$i" stop "$dir/node.pid" >/dev/null 2>&1 || true
  fi
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
    say "killing $(node_name "$i") (pid $pid)"
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/node.pid" "$dir/launcher.pid"
}

cmd_stop() {
  local i
  # All at once: their data goes too, so no node needs to outlive another.
  for i in $(seq 1 "$CLUSTER_NODES"); do
    (stop_node "$i"; rm -rf "$(node_dir "$i")") &
  done
  wait
  rmdir "$CLUSTER_DIR" 2>/dev/null || true
  say "stopped"
}

cmd_status() {
  local i
  for i in $(seq 1 "$CLUSTER_NODES"); do
    if is_up "$i"; then ctl "$i" cluster_status; return; fi
  done
  say "no node of ${CLUSTER_PREFIX}1..${CLUSTER_PREFIX}$CLUSTER_NODES is running"
  return 3
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  url) broker_url ;;
  stop-node) stop_node "$(node_index "${2:?stop-node needs a node}")" ;;
  start-node) i=$(node_index "${2:?start-node needs a node}"); start_node "$i"; await_node "$i" ;;
  *) echo "usage: $0 start|stop|status|url|stop-node N|start-node N" >&2; exit 2 ;;
esac
