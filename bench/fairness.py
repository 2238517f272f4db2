#!/usr/bin/env python3
"""Fairness under attack (issue #18), run by `scripts/bench fairness` as root: for each binary given, one tokend
with one instance; uid 65534 holds ATTACK connections (a third idle, a third trickling a head a byte every 2 s, a
third watch streams; closed and refused ones are reopened every second) and uid 65533 pipelines token requests on three connections without
reading an answer. Meanwhile root (an admin) and uid 4242 each ask for the token on a new connection every 20 ms
for FAIRNESS_DURATION seconds. Recorded: the share of their requests answered 200 with the token, p50/p99 latency, and the
daemon's RSS before, at its peak and 5 s after the attackers stopped. Writes bench/fairness.json.

    fairness.py OUT LABEL=BINARY [LABEL=BINARY ...]      (environment: FAIRNESS_DURATION 20, ATTACK 1100)
"""
import http.server
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

DURATION = float(os.environ.get("FAIRNESS_DURATION", "20"))
ATTACK = int(os.environ.get("ATTACK", "1100"))
HERE = os.path.dirname(os.path.abspath(__file__))

ATTACKER = r"""
import resource, select, socket, sys, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
path, count = sys.argv[1], int(sys.argv[2])
slots = [None] * count
def open_slot(i):
    s = socket.socket(socket.AF_UNIX)
    s.setblocking(False)
    try:
        s.connect(path)
        if i % 3 == 1: s.send(b"G")
        if i % 3 == 2: s.send(b"GET /v1/tokens/bench/watch HTTP/1.1\r\nHost: x\r\n\r\n")
    except OSError:
        s.close()
        return None
    return s
last_trickle = 0.0
refused = 0
while True:
    if select.select([sys.stdin], [], [], 0)[0] and not sys.stdin.read(1):
        break
    held = 0
    for i in range(count):
        s = slots[i]
        if s is not None:
            try:
                data = s.recv(65536)
                if data == b"" or data.startswith(b"HTTP/1.1 503"):
                    refused += data.startswith(b"HTTP/1.1 503")
                    s.close(); s = None
            except BlockingIOError:
                pass
            except OSError:
                s.close(); s = None
        # Counted once it has stayed open for a round (a refused one has its 503 by then).
        held += s is not None
        if s is None:
            s = open_slot(i)
        slots[i] = s
    now = time.monotonic()
    if now - last_trickle >= 2:
        last_trickle = now
        for i in range(1, count, 3):
            if slots[i] is not None:
                try: slots[i].send(b"E")
                except OSError: pass
    print("held", held, refused, flush=True)
    time.sleep(1)
"""

PIPELINER = r"""
import select, socket, sys, time
path = sys.argv[1]
chunk = b"GET /v1/tokens/bench?format=raw HTTP/1.1\r\nHost: x\r\n\r\n" * 1000
conns = []
def connect():
    while True:
        try:
            s = socket.socket(socket.AF_UNIX); s.connect(path); s.setblocking(False); return [s, 0]
        except OSError:
            s.close(); time.sleep(0.1)
conns = [connect() for _ in range(3)]
pushed = 0
while not (select.select([sys.stdin], [], [], 0)[0] and not sys.stdin.read(1)):
    for c in conns:
        try:
            offset = c[1] % len(chunk)
            n = c[0].send(chunk[offset:])
            c[1] += n; pushed += n
        except BlockingIOError:
            pass
        except OSError:
            c[0].close(); c[0], c[1] = connect()
    select.select([], [c[0] for c in conns], [], 0.05)
print("pushed", pushed, flush=True)
"""

CLIENT = r"""
import json, socket, sys, time
path, duration, token = sys.argv[1], float(sys.argv[2]), sys.argv[3]
ok, failed, latencies, failures = 0, 0, [], {}
end = time.monotonic() + duration
while time.monotonic() < end:
    started = time.monotonic()
    kind = None
    try:
        s = socket.socket(socket.AF_UNIX); s.settimeout(2); s.connect(path)
        s.sendall(b"GET /v1/tokens/bench?format=raw HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            part = s.recv(65536)
            if not part: break
            data += part
        s.close()
        good = data.startswith(b"HTTP/1.1 200") and data.endswith(token.encode())
        if not good: kind = data[:12].decode(errors="replace") or "closed"
    except OSError as e:
        good, kind = False, type(e).__name__
    latencies.append(time.monotonic() - started)
    if good: ok += 1
    else:
        failed += 1
        failures[kind] = failures.get(kind, 0) + 1
    time.sleep(0.02)
print(json.dumps({"ok": ok, "failed": failed, "latencies": latencies, "failures": failures}))
"""


class TokenEndpoint(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = json.dumps({"access_token": "tok-fairness-0123456789", "token_type": "Bearer", "expires_in": 86400}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def percentile(values, p):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def as_user(uid):
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]


def run(label, binary, port):
    work = tempfile.mkdtemp(prefix="tokend-fairness-")
    os.chmod(work, 0o755)
    config = f"{work}/config"
    os.makedirs(f"{config}/instances")
    with open(f"{work}/secret", "w") as f:
        f.write("s3cret")
    os.chmod(f"{work}/secret", 0o600)
    with open(f"{config}/tokend.toml", "w") as f:
        f.write('socket_mode = "0666"\nlog_level = "error"\n')
    with open(f"{config}/instances/bench.toml", "w") as f:
        f.write(f'token_url = "http://127.0.0.1:{port}/token"\n[variables]\nclient_id = "bench"\n'
                f'client_secret = {{ file = "{work}/secret" }}\n')
    for name in ("attacker.py", "pipeliner.py", "client.py"):
        with open(f"{work}/{name}", "w") as f:
            f.write({"attacker.py": ATTACKER, "pipeliner.py": PIPELINER, "client.py": CLIENT}[name])
    sock = f"{work}/tokend.sock"
    log = open(f"{work}/tokend.log", "w")
    daemon = subprocess.Popen([binary, "run", "--config-dir", config, "--state-dir", f"{work}/state", "--socket", sock],
                              stdout=log, stderr=log)
    token = "tok-fairness-0123456789"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        probe = subprocess.run(["python3", f"{work}/client.py", sock, "0.01", token], capture_output=True, text=True)
        if probe.returncode == 0 and json.loads(probe.stdout)["ok"] > 0:
            break
        time.sleep(0.1)
    time.sleep(1)
    rss_before = rss_kib(daemon.pid)
    attacker = subprocess.Popen(as_user(65534) + ["/usr/bin/python3", f"{work}/attacker.py", sock, str(ATTACK)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    pipeliner = subprocess.Popen(as_user(65533) + ["/usr/bin/python3", f"{work}/pipeliner.py", sock],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    held, refusals = [], [0]

    def read_attacker():
        for line in attacker.stdout:
            fields = line.split()
            held.append(int(fields[1]))
            refusals[0] = int(fields[2])
    threading.Thread(target=read_attacker, daemon=True).start()
    time.sleep(3)
    peak = [rss_kib(daemon.pid)]
    sampling = True

    def sample():
        while sampling:
            peak[0] = max(peak[0], rss_kib(daemon.pid))
            time.sleep(0.5)
    sampler = threading.Thread(target=sample)
    sampler.start()
    clients = {
        "root": subprocess.Popen(["/usr/bin/python3", f"{work}/client.py", sock, str(DURATION), token],
                                 stdout=subprocess.PIPE, text=True),
        "uid 4242": subprocess.Popen(as_user(4242) + ["/usr/bin/python3", f"{work}/client.py", sock, str(DURATION), token],
                                     stdout=subprocess.PIPE, text=True),
    }
    results = {name: json.loads(process.communicate(timeout=DURATION + 60)[0]) for name, process in clients.items()}
    held_during = max(held) if held else 0
    attacker.stdin.close()
    try:
        pushed = pipeliner.communicate(timeout=30)[0].split()
    except subprocess.TimeoutExpired:
        pipeliner.kill()
        pushed = []
    try:
        attacker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        attacker.kill()
    sampling = False
    sampler.join()
    time.sleep(5)
    rss_after = rss_kib(daemon.pid)
    status = daemon.poll()
    if status is None:
        daemon.terminate()
        daemon.wait(timeout=30)
    subprocess.run(["rm", "-rf", work])
    callers = {}
    for name, result in results.items():
        total = result["ok"] + result["failed"]
        callers[name] = {
            "requests": total, "ok": result["ok"],
            "share": round(result["ok"] / total, 4) if total else 0,
            "p50_ms": round(percentile(result["latencies"], 50) * 1000, 2),
            "p99_ms": round(percentile(result["latencies"], 99) * 1000, 2),
            "failures": result["failures"],
        }
    return {
        "label": label, "binary": binary, "callers": callers, "attacker_connections_held": held_during,
        "attacker_answered_503": refusals[0],
        "pipelined_bytes_taken": int(pushed[1]) if len(pushed) == 2 else None,
        "rss_kib": {"before": rss_before, "peak": peak[0], "after": rss_after}, "daemon_survived": status is None,
        "daemon_exit_status": status,
    }


def main():
    out = sys.argv[1]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TokenEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    runs = []
    for argument in sys.argv[2:]:
        label, binary = argument.split("=", 1)
        result = run(label, binary, server.server_address[1])
        print("fairness:", json.dumps(result), flush=True)
        runs.append(result)
    server.shutdown()
    machine = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cores": os.cpu_count(),
               "loadavg_at_start": float(open("/proc/loadavg").read().split()[0])}
    with open(out, "w") as f:
        json.dump({"machine": machine, "duration_s": DURATION, "attack_connections": ATTACK, "runs": runs}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
