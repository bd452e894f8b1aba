#!/usr/bin/env python3
"""End-to-end benchmark: the same iperf3 loads over several data planes, in one run.

Builds two hosts as network namespaces (ferry lab, the README's layout: a container behind
bridge0 on each host, a veth underlay) and measures, for each data plane, TCP with one and
with four streams and 64-byte UDP at full rate, over several rounds; the whole machine's CPU
time per gigabit moved comes from /proc/stat. Every figure is also given as a ratio to the
Linux vxlan device in the same layout (a port of bridge0), measured in the same run. Results:
a markdown table, a JSON file and an SVG chart, medians of the rounds.

Run as root through bench/run (which installs iperf3 and builds ferry in release mode).
"""
import argparse, json, os, re, shutil, signal, statistics, subprocess, sys, time

PREFIX = "fbench"
H = [f"{PREFIX}-h0", f"{PREFIX}-h1"]
C = [f"{PREFIX}-h0c0", f"{PREFIX}-h1c0"]
UNDERLAY = ["10.99.0.1", "10.99.0.2"]
CONTAINER = ["10.17.0.2", "10.18.0.2"]


def sh(*args, check=True, timeout=120, capture=True):
    r = subprocess.run(list(args), capture_output=capture, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {r.returncode}: {r.stderr.strip()}")
    return r


def ns(name, *args, **kw):
    return sh("ip", "netns", "exec", name, *args, **kw)


def cpu_busy_seconds():
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


class Lab:
    """Wraps `ferry lab`: the topology only (--encap none); each data plane adds its tunnel."""

    def __init__(self, ferry):
        self.ferry = ferry
        self.procs = []

    def up(self):
        sh(self.ferry, "lab", "up", "--prefix", PREFIX, "--encap", "none")

    def down(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs = []
        sh(self.ferry, "lab", "down", "--prefix", PREFIX, check=False)

    def spawn(self, namespace, *args, log=None):
        out = open(log, "w") if log else subprocess.DEVNULL
        p = subprocess.Popen(["ip", "netns", "exec", namespace, *args], stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p


# Each data plane: set-up in a fresh lab, and the (client namespace, server namespace, address) to measure.
def plane_veth(lab):
    return H[0], H[1], UNDERLAY[1]


def plane_vxlan_device(lab):
    for i in (0, 1):
        ns(H[i], "ip", "link", "add", "vx0", "type", "vxlan", "id", "42", "local", UNDERLAY[i], "remote", UNDERLAY[1 - i],
           "dstport", "4789", "dev", "u0")
        ns(H[i], "ip", "addr", "add", f"10.200.0.{i + 1}/24", "dev", "vx0")
        ns(H[i], "ip", "link", "set", "vx0", "up")
    return H[0], H[1], "10.200.0.2"


def plane_vxlan_bridge(lab):
    for i in (0, 1):
        ns(H[i], "ip", "link", "add", "vx0", "type", "vxlan", "id", "42", "local", UNDERLAY[i], "remote", UNDERLAY[1 - i],
           "dstport", "4789", "dev", "u0")
        ns(H[i], "ip", "link", "set", "vx0", "mtu", "1450", "master", "bridge0", "up")
    return C[0], C[1], CONTAINER[1]


def ferry_plane(tunnel, extra=(), settle=0.0, binary=None):
    """Ferry on both hosts; `settle` seconds after a few pings (GRE's link path reads the next
    hop once a second, after the pings have had the kernel resolve it). `binary`: another ferry
    than the one measured (--baseline-ferry)."""
    def setup(lab):
        for i in (0, 1):
            lab.spawn(H[i], binary or lab.ferry, "run", "--tap", "ferry0", "--bridge", "bridge0", "--local", UNDERLAY[i],
                      "--peer", UNDERLAY[1 - i], "--control", f"/run/ferry/{PREFIX}-h{i}.sock", "--stats-interval", "0",
                      *tunnel, *extra, log=f"/tmp/{PREFIX}-ferry-h{i}.log")
        deadline = time.time() + 15
        while time.time() < deadline and not all(os.path.exists(f"/run/ferry/{PREFIX}-h{i}.sock") for i in (0, 1)):
            time.sleep(0.1)
        if settle:
            ns(C[0], "ping", "-c", "3", "-i", "0.2", "-W", "2", CONTAINER[1], check=False)
            time.sleep(settle)
        return C[0], C[1], CONTAINER[1]
    setup.ferry_args = (tunnel, extra, settle)
    return setup


def ovs_plane(kind):
    """Open vSwitch's userspace datapath: one ovsdb-server and one ovs-vswitchd per host
    namespace, a netdev bridge br-phy holding the underlay port (userspace tunnelling needs the
    underlay address on an OVS bridge), and a netdev bridge br-int with the tunnel port, linked
    to bridge0 by a veth pair: the tunnel port "added to the bridge". OVS reads its veth ports
    through AF_PACKET and does not finish partial checksums, so checksum and segmentation
    offloads are off on every veth the traffic crosses, as OVS's userspace datapath requires."""
    def setup(lab):
        for i in (0, 1):
            d = f"/tmp/{PREFIX}-ovs-h{i}"
            shutil.rmtree(d, ignore_errors=True)
            os.makedirs(d)
            env = ["env", f"OVS_RUNDIR={d}", f"OVS_LOGDIR={d}"]
            sh("ovsdb-tool", "create", f"{d}/conf.db", "/usr/share/openvswitch/vswitch.ovsschema")
            ns(H[i], *env, "ovsdb-server", f"{d}/conf.db", f"--remote=punix:{d}/db.sock", f"--pidfile={d}/ovsdb.pid",
               "--detach", f"--log-file={d}/ovsdb.log")
            vsctl = [*env, "ovs-vsctl", f"--db=unix:{d}/db.sock"]
            ns(H[i], *vsctl, "--no-wait", "init")
            ns(H[i], *env, "ovs-vswitchd", f"unix:{d}/db.sock", f"--pidfile={d}/vswitchd.pid", "--detach",
               f"--log-file={d}/vswitchd.log")
            ns(H[i], *vsctl, "add-br", "br-phy", "--", "set", "bridge", "br-phy", "datapath_type=netdev")
            ns(H[i], *vsctl, "add-port", "br-phy", "u0")
            ns(H[i], "ip", "addr", "flush", "dev", "u0")
            ns(H[i], "ip", "addr", "add", f"{UNDERLAY[i]}/24", "dev", "br-phy")
            ns(H[i], "ip", "link", "set", "br-phy", "up")
            ns(H[i], *vsctl, "add-br", "br-int", "--", "set", "bridge", "br-int", "datapath_type=netdev")
            ns(H[i], *vsctl, "add-port", "br-int", "tun0", "--", "set", "interface", "tun0", f"type={kind}",
               f"options:remote_ip={UNDERLAY[1 - i]}", "options:key=42")
            ns(H[i], "ip", "link", "add", "ovl", "type", "veth", "peer", "name", "ovb")
            ns(H[i], "ip", "link", "set", "ovl", "mtu", "1450", "master", "bridge0", "up")
            ns(H[i], "ip", "link", "set", "ovb", "mtu", "1450", "up")
            for dev in ("ovl", "ovb", "u0", "c0"):
                ns(H[i], "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off", "tx", "off", "rx", "off", check=False)
            ns(C[i], "ethtool", "-K", "eth0", "tso", "off", "gso", "off", "tx", "off", check=False)
            ns(H[i], *vsctl, "add-port", "br-int", "ovb")
            ns(H[i], "ip", "link", "set", "br-int", "up")
        # Let the datapath learn: a few pings before the measurement.
        ns(C[0], "ping", "-c", "3", "-i", "0.2", "-W", "2", CONTAINER[1], check=False)
        return C[0], C[1], CONTAINER[1]
    return setup


PLANES = {
    "veth": ("plain veth, no tunnel (the ceiling)", plane_veth),
    "vxlan-device": ("Linux vxlan device, address on the device", plane_vxlan_device),
    "vxlan-bridge": ("Linux vxlan device as a bridge port", plane_vxlan_bridge),
    "ferry-vxlan": ("Ferry VXLAN", ferry_plane(["--vni", "42"])),
    "ferry-gre": ("Ferry GRE", ferry_plane(["--encap", "gre", "--key", "42"])),
    "ferry-gre-link": ("Ferry GRE, link path", ferry_plane(["--encap", "gre", "--key", "42", "--gre-path", "link"], settle=1.2)),
    "ovs-vxlan": ("Open vSwitch 3.1 userspace datapath, VXLAN", ovs_plane("vxlan")),
    "ovs-gre": ("Open vSwitch 3.1 userspace datapath, GRE", ovs_plane("gre")),
    "ferry-vxlan-1worker": ("Ferry VXLAN, one worker", ferry_plane(["--vni", "42", "--workers", "1"])),
    "ferry-vxlan-nooffload": ("Ferry VXLAN, offloads off", ferry_plane(["--vni", "42", "--offloads", "off"])),
    "ferry-gre-nooffload": ("Ferry GRE, offloads off", ferry_plane(["--encap", "gre", "--key", "42", "--offloads", "off"])),
}
BASELINE = "vxlan-bridge"


def label(p):
    """A plane's name in the tables; `name@base` is that plane run with --baseline-ferry."""
    name, _, base = p.partition("@")
    return PLANES[name][0] + (", baseline build" if base else "")


def iperf(lab, client, server, address, seconds, args):
    srv = lab.spawn(server, "iperf3", "-s", "-1")
    deadline = time.time() + 5
    while time.time() < deadline:
        if "5201" in ns(server, "ss", "-ltn", "sport = :5201", check=False).stdout:
            break
        time.sleep(0.05)
    before = cpu_busy_seconds()
    r = ns(client, "iperf3", "-c", address, "-t", str(seconds), "-J", *args, check=False, timeout=seconds + 30)
    cpu = cpu_busy_seconds() - before
    try:
        srv.wait(timeout=10)
    except subprocess.TimeoutExpired:
        srv.kill()
    try:
        return json.loads(r.stdout), cpu
    except json.JSONDecodeError:
        return None, cpu


def measure(lab, client, server, address, seconds):
    out = {}
    j, cpu = iperf(lab, client, server, address, seconds, [])
    if j and "end" in j:
        bps = j["end"]["sum_received"]["bits_per_second"]
        out["tcp1_gbps"] = bps / 1e9
        out["tcp1_cpu_s_per_gbit"] = cpu / (bps * seconds / 1e9) if bps else None
    j, cpu = iperf(lab, client, server, address, seconds, ["-P", "4"])
    if j and "end" in j:
        bps = j["end"]["sum_received"]["bits_per_second"]
        out["tcp4_gbps"] = bps / 1e9
        out["tcp4_cpu_s_per_gbit"] = cpu / (bps * seconds / 1e9) if bps else None
    j, cpu = iperf(lab, client, server, address, seconds, ["-u", "-b", "0", "-l", "64"])
    if j and "end" in j:
        s = j["end"]["sum"]
        delivered = s["packets"] - s["lost_packets"]
        out["udp64_kpps"] = delivered / s["seconds"] / 1e3
        out["udp64_loss_pct"] = s["lost_percent"]
    return out


METRICS = [("tcp1_gbps", "TCP 1 stream, Gbit/s"), ("tcp4_gbps", "TCP 4 streams, Gbit/s"),
           ("udp64_kpps", "UDP 64 B delivered, kpps"), ("udp64_loss_pct", "UDP 64 B loss, %"),
           ("tcp1_cpu_s_per_gbit", "CPU s per Gbit (TCP 1)")]


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def svg_chart(medians, order, path):
    """Two bar groups per data plane: TCP 1-stream throughput and CPU per gigabit, as ratios to the baseline."""
    base = medians.get(BASELINE, {})
    rows = []
    for name in order:
        m = medians.get(name, {})
        t = m.get("tcp1_gbps"); c = m.get("tcp1_cpu_s_per_gbit")
        rows.append((name, t / base["tcp1_gbps"] if t and base.get("tcp1_gbps") else 0,
                     c / base["tcp1_cpu_s_per_gbit"] if c and base.get("tcp1_cpu_s_per_gbit") else 0))
    top = max([1.0] + [r[1] for r in rows] + [r[2] for r in rows]) * 1.1
    width, height, left, bar = 760, 60 + 40 * len(rows), 170, 14
    scale = (width - left - 40) / top
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
           f'<text x="10" y="20" font-size="14">TCP 1-stream throughput (blue) and CPU per Gbit (orange), as ratios to {BASELINE}</text>']
    x1 = left + scale * 1.0
    out.append(f'<line x1="{x1}" y1="30" x2="{x1}" y2="{height - 10}" stroke="#888" stroke-dasharray="4"/>')
    for i, (name, t, c) in enumerate(rows):
        y = 40 + 40 * i
        out.append(f'<text x="10" y="{y + 14}">{name}</text>')
        out.append(f'<rect x="{left}" y="{y}" width="{scale * t:.1f}" height="{bar}" fill="#4e79a7"/>')
        out.append(f'<text x="{left + scale * t + 4:.1f}" y="{y + 11}">{t:.2f}×</text>')
        out.append(f'<rect x="{left}" y="{y + bar + 2}" width="{scale * c:.1f}" height="{bar}" fill="#f28e2b"/>')
        out.append(f'<text x="{left + scale * c + 4:.1f}" y="{y + bar + 13}">{c:.2f}×</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ferry", help="path to the ferry binary (release build); bench/run gives it")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--planes", default=",".join(PLANES), help="comma-separated, from: " + ", ".join(PLANES))
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--baseline-ferry", metavar="PATH",
                    help="another ferry binary (say, a release build of the commit before a change): each Ferry plane "
                         "picked is measured with it too, interleaved in the same rounds")
    ap.add_argument("--render", metavar="JSON", help="write the tables and chart again from a saved e2e.json, measuring nothing")
    a = ap.parse_args()
    if a.render:
        with open(a.render) as f:
            saved = json.load(f)
        order = saved.get("order") or list(saved["medians"])
        os.makedirs(a.out, exist_ok=True)
        write_results(a.out, saved["rounds"], saved["seconds"], order, saved["raw"], saved["medians"])
        return
    if not a.ferry:
        ap.error("--ferry PATH is needed to measure (bench/run gives it)")
    order = [p for p in a.planes.split(",") if p]
    for p in order:
        if p not in PLANES:
            sys.exit(f"unknown data plane '{p}'; choose from {', '.join(PLANES)}")
    if BASELINE not in order:
        order.insert(0, BASELINE)
    if a.baseline_ferry:
        for p in [p for p in order if hasattr(PLANES[p][1], "ferry_args")]:
            twin = p + "@base"
            PLANES[twin] = (label(twin), ferry_plane(*PLANES[p][1].ferry_args, binary=a.baseline_ferry))
            order.insert(order.index(p) + 1, twin)
    os.makedirs(a.out, exist_ok=True)
    os.makedirs("/run/ferry", exist_ok=True)

    lab = Lab(a.ferry)
    signal.signal(signal.SIGTERM, lambda *_: (lab.down(), sys.exit(1)))
    results = {p: [] for p in order}
    try:
        for r in range(a.rounds):
            for p in order:  # interleaved, so that drift in the machine touches every plane alike
                lab.up()
                try:
                    client, server, address = PLANES[p][1](lab)
                    m = measure(lab, client, server, address, a.seconds)
                finally:
                    lab.down()
                results[p].append(m)
                print(f"round {r + 1}/{a.rounds} {p}: " + ", ".join(f"{k} {v:.3g}" for k, v in m.items() if v is not None), flush=True)
    except KeyboardInterrupt:
        lab.down()
        sys.exit(130)

    medians = {p: {k: median([m.get(k) for m in results[p]]) for k, _ in METRICS} for p in order}
    write_results(a.out, a.rounds, a.seconds, order, results, medians)


# Each of Ferry's planes against Open vSwitch's datapath for the same tunnel.
OVS_PEER = {"ferry-vxlan": "ovs-vxlan", "ferry-vxlan-1worker": "ovs-vxlan", "ferry-vxlan-nooffload": "ovs-vxlan",
            "ferry-gre": "ovs-gre", "ferry-gre-link": "ovs-gre", "ferry-gre-nooffload": "ovs-gre"}


def tables(rounds, seconds, order, medians):
    """The markdown: every plane against the kernel device, then Ferry's against Open vSwitch."""
    base = medians[BASELINE]
    lines = [f"Medians of {rounds} rounds of {seconds} s; ratio to the Linux vxlan device as a bridge port in the same run.", "",
             "| data plane | " + " | ".join(label for _, label in METRICS) + " |",
             "|---|" + "---|" * len(METRICS)]
    for p in order:
        cells = []
        for k, _ in METRICS:
            v = medians[p][k]; b = base.get(k)
            if v is None:
                cells.append("–")
            elif k == "udp64_loss_pct" or not b:
                cells.append(f"{v:.3g}")
            else:
                cells.append(f"{v:.3g} ({v / b:.2f}×)")
        lines.append(f"| {label(p)} | " + " | ".join(cells) + " |")
    pairs = [(p, OVS_PEER[p]) for p in order if p in OVS_PEER and OVS_PEER[p] in order]
    if pairs:
        lines += ["", "Ferry against Open vSwitch's userspace datapath with the same tunnel, same run:", "",
                  "| data plane | TCP 1 stream | TCP 4 streams | UDP 64 B delivered |", "|---|---|---|---|"]
        for p, o in pairs:
            cells = []
            for k in ("tcp1_gbps", "tcp4_gbps", "udp64_kpps"):
                v, w = medians[p].get(k), medians[o].get(k)
                cells.append(f"{v / w:.1f}×" if v and w else "–")
            lines.append(f"| {label(p)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(out, rounds, seconds, order, results, medians):
    table = tables(rounds, seconds, order, medians)
    print("\n" + table)
    with open(os.path.join(out, "e2e.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(out, "e2e.json"), "w") as f:
        json.dump({"rounds": rounds, "seconds": seconds, "baseline": BASELINE, "order": order, "raw": results,
                   "medians": medians}, f, indent=2)
    svg_chart(medians, order, os.path.join(out, "e2e.svg"))
    print(f"\nwrote {out}/e2e.md, e2e.json, e2e.svg")

if __name__ == "__main__":
    main()
