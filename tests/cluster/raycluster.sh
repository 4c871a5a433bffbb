#!/usr/bin/env bash
# A real two-node Ray cluster on one machine, one Linux network namespace per node (needs root).
#
#   raycluster.sh up TAG     start it; prints KEY=VALUE lines (HEAD_NS, NODE_NS, ADDRESS, TEMP)
#   raycluster.sh down TAG   kill every process in its namespaces, delete them and its files
#   raycluster.sh node-down TAG   SIGKILL every process of the second node (a machine lost)
#   raycluster.sh node-cut TAG    take the second node off the network (its link down; its processes
#                                 run on, unreachable: a machine that vanished without a word)
#   raycluster.sh node-up TAG     start (or restart) the second node, its link up again (NODES=1 up
#                                 starts the head only; NODES=0 up makes the namespaces and their
#                                 network, no Ray)
#   raycluster.sh gcs-kill TAG     SIGKILL the head's gcs_server (its command line and environment
#                                  are kept in $TEMP for gcs-restart)
#   raycluster.sh gcs-restart TAG  start that gcs_server again, same command line and environment
#                                  (what a supervisor such as KubeRay does; `ray start` does not
#                                  restart it); waits until its port answers. FRESH=1: without
#                                  its Redis arguments (an in-memory GCS: a new, empty cluster)
#   raycluster.sh info TAG   print its KEY=VALUE lines again
#   raycluster.sh down-all   tear down every cluster this script made (CI's exit trap)
#
# Layout (private 10.212.N.0/24 addresses exist inside these namespaces only; the host's own
# interfaces are never used): namespace pirc${TAG}b holds a bridge; pirc${TAG}1 (head) and pirc${TAG}2
# (second node) each get a veth pair whose other end joins the bridge, lo up and a default
# route on the veth. The driver runs in the head's namespace (a Ray driver needs a raylet on
# its own address). Both nodes and the driver use RAY_AUTH_MODE=token with a fresh random token
# in $TEMP/auth_token (RAY_AUTH_TOKEN_PATH), so ~/.ray is not touched.
# Environment: RAY_CPUS (logical CPUs per node, default 1), RAY_PORT (default 6379),
# NET (third octet, default 1..250 from TAG), GCS_FT=1 (GCS fault tolerance: `up` starts the OS's
# redis-server in the head's namespace on HEAD_IP:REDIS_PORT (default 6380, no persistence: it
# outlives the GCS, not the cluster) and the head with RAY_REDIS_ADDRESS pointing at it and
# RAY_external_storage_namespace=pirc$TAG; prints REDIS_ADDRESS too; `down` stops it with the rest).
set -euo pipefail
cmd=${1:?usage: raycluster.sh up|down|node-down|node-cut|node-up|gcs-kill|gcs-restart|info TAG, or down-all}
if [[ $cmd == down-all ]]; then
  for ns in $(ip netns list | awk '{print $1}' | grep -E '^pirc[a-z0-9]{1,6}[12b]$' || true); do
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [[ -n $pids ]] && kill -9 $pids 2>/dev/null || true
    sleep 0.2; ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf /tmp/pirc*-ray
  exit 0
fi
tag=${2:?usage: raycluster.sh up|down|node-down TAG}
[[ $tag =~ ^[a-z0-9]{1,6}$ ]] || { echo "TAG must be 1-6 of [a-z0-9], got '$tag'" >&2; exit 2; }
br=pirc${tag}b; ns1=pirc${tag}1; ns2=pirc${tag}2
net=${NET:-$(( $(printf '%s' "$tag" | cksum | cut -d' ' -f1) % 250 + 1 ))}
ip1=10.212.$net.1; ip2=10.212.$net.2
port=${RAY_PORT:-6379}; cpus=${RAY_CPUS:-1}; redis_port=${REDIS_PORT:-6380}
temp=/tmp/pirc${tag}-ray
RAY=${RAY:-ray}
auth="RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$temp/auth_token"

kill_ns() {  # SIGKILL every process in namespace $1 (by pid, nothing else)
  local pids
  pids=$(ip netns pids "$1" 2>/dev/null || true)
  [[ -n $pids ]] && kill -9 $pids 2>/dev/null || true
  for _ in $(seq 50); do [[ -z $(ip netns pids "$1" 2>/dev/null || true) ]] && return 0; sleep 0.1; done
}

down() {
  for ns in $ns2 $ns1 $br; do
    if [[ -e /run/netns/$ns ]]; then kill_ns "$ns"; ip netns del "$ns" 2>/dev/null || true; fi
  done
  rm -rf "$temp"
}

up() {
  down
  mkdir -p "$temp"
  ip netns add "$br"; ip netns add "$ns1"; ip netns add "$ns2"
  ip -n "$br" link set lo up
  ip -n "$br" link add br0 type bridge
  ip -n "$br" link set br0 up
  local i=1
  for ns in $ns1 $ns2; do
    ip -n "$br" link add "p$i" type veth peer name eth0 netns "$ns"
    ip -n "$br" link set "p$i" master br0 up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "10.212.$net.$i/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add default dev eth0
    i=$((i + 1))
  done
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$temp/auth_token"
  chmod 600 "$temp/auth_token"
  if [[ ${NODES:-2} == 0 ]]; then info; return 0; fi
  local t0=$SECONDS ft=""
  if [[ ${GCS_FT:-0} == 1 ]]; then
    command -v redis-server >/dev/null || { echo "GCS_FT=1 needs redis-server (apt-get install redis-server)" >&2; exit 1; }
    ip netns exec "$ns1" setsid redis-server --bind "$ip1" --port "$redis_port" --save '' --appendonly no \
      --protected-mode no --dir "$temp" >"$temp/redis.log" 2>&1 </dev/null &
    for _ in $(seq 100); do
      ip netns exec "$ns1" redis-cli -h "$ip1" -p "$redis_port" ping 2>/dev/null | grep -q PONG && break; sleep 0.1
    done
    ip netns exec "$ns1" redis-cli -h "$ip1" -p "$redis_port" ping | grep -q PONG || { cat "$temp/redis.log" >&2; exit 1; }
    echo "$ip1:$redis_port" >"$temp/redis_address"
    ft="RAY_REDIS_ADDRESS=$ip1:$redis_port RAY_external_storage_namespace=pirc$tag"
  fi
  ip netns exec "$ns1" env $auth $ft "$RAY" start --head --node-ip-address "$ip1" --port "$port" \
    --num-cpus "$cpus" --include-dashboard false --disable-usage-stats --temp-dir "$temp/head" >"$temp/head.log" 2>&1 \
    || { cat "$temp/head.log" >&2; exit 1; }
  [[ ${NODES:-2} == 1 ]] || node_up
  info; echo "START_S=$((SECONDS - t0))"
}

node_up() {
  ip -n "$ns2" link set eth0 up
  ip netns exec "$ns2" env $auth "$RAY" start --address "$ip1:$port" --node-ip-address "$ip2" \
    --num-cpus "$cpus" --disable-usage-stats --temp-dir "$temp/node2" >"$temp/node2.log" 2>&1 \
    || { cat "$temp/node2.log" >&2; exit 1; }
}

info() {
  echo "HEAD_NS=$ns1"; echo "NODE_NS=$ns2"; echo "ADDRESS=$ip1:$port"; echo "NODE_IPS=$ip1,$ip2"
  echo "TOKEN_PATH=$temp/auth_token"; echo "TEMP=$temp"
  if [[ -e $temp/redis_address ]]; then echo "REDIS_ADDRESS=$(cat "$temp/redis_address")"; fi
}

gcs_pid() {  # the head's gcs_server process id (empty when none runs)
  local pid
  for pid in $(ip netns pids "$ns1" 2>/dev/null || true); do
    if [[ $(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | head -1) == */gcs_server ]]; then echo "$pid"; return 0; fi
  done
}

gcs_kill() {
  local pid; pid=$(gcs_pid)
  [[ -n $pid ]] || { echo "no gcs_server runs in $ns1" >&2; exit 1; }
  cp "/proc/$pid/cmdline" "$temp/gcs_cmdline"; cp "/proc/$pid/environ" "$temp/gcs_environ"
  kill -9 "$pid"
  for _ in $(seq 50); do [[ -e /proc/$pid ]] || return 0; sleep 0.1; done
}

gcs_restart() {
  [[ -s $temp/gcs_cmdline ]] || { echo "no gcs_server was killed by gcs-kill $tag" >&2; exit 1; }
  [[ -z $(gcs_pid) ]] || { echo "a gcs_server already runs in $ns1" >&2; exit 1; }
  local args envs
  mapfile -d '' args <"$temp/gcs_cmdline"; mapfile -d '' envs <"$temp/gcs_environ"
  if [[ ${FRESH:-0} == 1 ]]; then
    local kept=() a
    for a in "${args[@]}"; do [[ $a == --redis_address=* || $a == --redis_port=* ]] || kept+=("$a"); done
    args=("${kept[@]}")
  fi
  ip netns exec "$ns1" setsid env -i "${envs[@]}" "${args[@]}" >>"$temp/gcs_restart.log" 2>&1 </dev/null &
  for _ in $(seq 300); do
    ip netns exec "$ns1" bash -c "exec 3<>/dev/tcp/$ip1/$port" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "the restarted gcs_server does not answer on $ip1:$port" >&2; cat "$temp/gcs_restart.log" >&2; exit 1
}

case $cmd in
  up) up ;;
  down) down ;;
  node-down) kill_ns "$ns2" ;;
  node-cut) ip -n "$ns2" link set eth0 down ;;
  node-up) node_up ;;
  gcs-kill) gcs_kill ;;
  gcs-restart) gcs_restart ;;
  info) info ;;
  *) echo "unknown command '$cmd'; accepted: up, down, node-down, node-cut, node-up, gcs-kill, gcs-restart, info, down-all" >&2; exit 2 ;;
esac
