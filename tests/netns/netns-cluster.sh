#!/bin/bash
# tests/netns/netns-cluster.sh - a throw-away cluster of "nodes" on this
# machine for the multi-node tests: one network namespace per node, joined by
# veth pairs to a bridge in the root namespace, each running its own sshd.
#
#   netns-cluster.sh up   ID N [RATE]   ID 1..250 picks the subnet 10.254.ID.0/24;
#                                        RATE (e.g. 200mbit) shapes every node link
#   netns-cluster.sh down ID
#   netns-cluster.sh free-id             prints an unused ID in 150..239
#
# The shaping is `tc tbf rate RATE burst $NETNS_TC_BURST latency
# $NETNS_TC_LATENCY` (defaults 64kb and 50ms) on both ends of each link.
# NETNS_MTU (default: the kernel's, 1500) sets the MTU of both veth ends.
#
# `up` prints the state directory, which holds: nodes (one IP per line),
# id (client key), known_hosts, and the sshd logs.  The controller side (the
# root namespace) is 10.254.ID.254.  Needs root, iproute2 and openssh-server;
# exits 77 (skip) without them.  Everything made here is removed by `down`.
set -euo pipefail

cmd=${1:?usage: up|down ID [N] [RATE] | free-id}
if [ "$cmd" = free-id ]; then
	# an ID in 150..239 that no cluster on this machine uses now (up would
	# reset it), starting from one picked by the caller's PID; exit 1 if none
	id=$((150 + PPID % 90))
	for _ in $(seq 1 90); do
		if [ ! -e "/tmp/dpnetns-$id" ] && ! ip link show "dpbr$id" >/dev/null 2>&1; then
			echo "$id"
			exit 0
		fi
		id=$((150 + (id - 149) % 90))
	done
	exit 1
fi
id=${2:?ID}
n=${3:-3}
rate=${4:-}
burst=${NETNS_TC_BURST:-64kb}
latency=${NETNS_TC_LATENCY:-50ms}
st=/tmp/dpnetns-$id
br=dpbr$id
SSHD=/usr/sbin/sshd

skip() {
	echo "netns-cluster: skip: $*" >&2
	exit 77
}

down() {
	if [ -d "$st" ]; then
		for p in "$st"/sshd-*.pid; do
			[ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null || true
		done
	fi
	for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^dp${id}n" || true); do
		ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
		ip netns del "$ns" 2>/dev/null || true
	done
	ip link del "$br" 2>/dev/null || true
	rm -rf "$st"
}

case "$cmd" in
down)
	down
	exit 0
	;;
up) ;;
*)
	echo "usage: $0 up|down ID [N] [RATE]" >&2
	exit 64
	;;
esac

[ "$(id -u)" = 0 ] || skip "needs root"
command -v ip >/dev/null || skip "needs iproute2"
[ -x $SSHD ] || skip "needs openssh-server"
ip netns add "dp${id}probe" 2>/dev/null || skip "cannot create network namespaces here"
ip netns del "dp${id}probe"

down
mkdir -p "$st" /run/sshd
ssh-keygen -q -t ecdsa -N '' -f "$st/host_key"
ssh-keygen -q -t ecdsa -m PEM -N '' -f "$st/id"
cp "$st/id.pub" "$st/authorized_keys"
chmod 600 "$st/authorized_keys"
: >"$st/empty"
: >"$st/nodes"
: >"$st/known_hosts"
ip link add "$br" type bridge
ip addr add "10.254.$id.254/24" dev "$br"
ip link set "$br" up
hostkey=$(cut -d' ' -f1,2 "$st/host_key.pub")
for i in $(seq 1 "$n"); do
	ns=dp${id}n$i
	ip4=10.254.$id.$i
	ip netns add "$ns"
	ip link add "dp${id}h$i" type veth peer name "dp${id}p$i"
	ip link set "dp${id}p$i" netns "$ns"
	ip link set "dp${id}h$i" master "$br" up
	if [ -n "${NETNS_MTU:-}" ]; then
		ip link set "dp${id}h$i" mtu "$NETNS_MTU"
		ip netns exec "$ns" ip link set "dp${id}p$i" mtu "$NETNS_MTU"
	fi
	ip netns exec "$ns" ip link set lo up
	ip netns exec "$ns" ip link set "dp${id}p$i" name eth0
	ip netns exec "$ns" ip addr add "$ip4/24" dev eth0
	ip netns exec "$ns" ip link set eth0 up
	ip netns exec "$ns" ip route add default via "10.254.$id.254"
	if [ -n "$rate" ]; then
		# shape both directions of the node's link: egress in the node and
		# egress towards it on the host side
		ip netns exec "$ns" tc qdisc add dev eth0 root tbf rate "$rate" burst "$burst" \
			latency "$latency"
		tc qdisc add dev "dp${id}h$i" root tbf rate "$rate" burst "$burst" latency "$latency"
	fi
	cat >"$st/sshd-$i.conf" <<EOC
Port 22
ListenAddress $ip4
HostKey $st/host_key
AuthorizedKeysFile $st/authorized_keys
PidFile $st/sshd-$i.pid
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
MaxStartups 100
LogLevel ERROR
EOC
	# a private mount namespace hides a slow ~/.bashrc (Debian's bash reads
	# it for commands run by sshd)
	ip netns exec "$ns" unshare -m --propagation private sh -c \
		"[ -f \"\$HOME/.bashrc\" ] && mount --bind $st/empty \"\$HOME/.bashrc\"; exec $SSHD -f $st/sshd-$i.conf -E $st/sshd-$i.log" </dev/null
	echo "$ip4" >>"$st/nodes"
	echo "$ip4 $hostkey" >>"$st/known_hosts"
done
# wait until every sshd answers
for ip4 in $(cat "$st/nodes"); do
	for _ in $(seq 1 100); do
		if timeout 1 bash -c "exec 3<>/dev/tcp/$ip4/22" 2>/dev/null; then
			break
		fi
		sleep 0.05
	done
done
echo "$st"
