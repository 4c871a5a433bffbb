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
# NET (third octet, default 1..250 from TAG).
set -euo pipefail
cmd=${1:?usage: raycluster.sh up|down|node-down|node-cut|node-up TAG, or down-all}
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
port=${RAY_PORT:-6379}; cpus=${RAY_CPUS:-1}
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
  local t0=$SECONDS
  ip netns exec "$ns1" env $auth "$RAY" start --head --node-ip-address "$ip1" --port "$port" \
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
}

case $cmd in
  up) up ;;
  down) down ;;
  node-down) kill_ns "$ns2" ;;
  node-cut) ip -n "$ns2" link set eth0 down ;;
  node-up) node_up ;;
  info) info ;;
  *) echo "unknown command '$cmd'; accepted: up, down, node-down, node-cut, node-up, info, down-all" >&2; exit 2 ;;
esac
