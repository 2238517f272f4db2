#!/usr/bin/env python3
"""Fleet mode (issue #19, SPEC §14), run by `scripts/bench fleet`: N hosts (tokend processes, each with its own
config dir, state dir, socket and NOTIFY_SOCKET) × M identical instances against one static token endpoint (nginx,
counted by its access log), started at the same moment with empty state dirs, in three modes, interleaved per N:

  standalone  no [fleet]: every host asks the provider for every token
  fleet       [fleet] against a private PostgreSQL 15 cluster, the table dropped first (cold)
  fleet-warm  the same, the table left as the fleet run wrote it (state dirs empty): hosts joining a running fleet

Recorded per run: each host's time from its launch to READY=1, the provider requests until every host is ready and
FLEET_SETTLE seconds more, the hosts' CPU, and for the fleet modes the database's transactions (pg_stat_database's
xact_commit + xact_rollback of the tokend database) during start-up and over FLEET_IDLE idle seconds after it, the
connections, the PostgreSQL backends' CPU and pg_stat_statements' busiest statements.

    fleet.py OUT TOKEND TOKEN_URL ACCESS_LOG MACHINE_JSON
    (environment: FLEET_HOSTS "1 3 10", FLEET_INSTANCES 1000, FLEET_IDLE 10, FLEET_SETTLE 2, FLEET_WARM 1,
     CONCURRENCY 64, PG_BIN /usr/lib/postgresql/15/bin)

The cluster lives in a temp dir: 127.0.0.1 on a free port and a socket there, SCRAM over TCP, `fsync = off`,
`synchronous_commit = off`, `full_page_writes = off` (a benchmark, not a database to keep). As root, initdb and the
server run as uid 65534 (PostgreSQL refuses root). Everything, the server included, is stopped and removed on exit.

PostgreSQL's backends report their counters at most once a second while busy and after up to 10 s when idle (PG 15),
so the start-up count is read STATS_FLUSH seconds after the settle, and the idle count after the hosts have exited.
"""
import base64
import json
import os
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HOSTS = [int(n) for n in os.environ.get("FLEET_HOSTS", "1 3 10").split()]
INSTANCES = int(os.environ.get("FLEET_INSTANCES", "1000"))
IDLE = float(os.environ.get("FLEET_IDLE", "10"))
SETTLE = float(os.environ.get("FLEET_SETTLE", "2"))
WARM = os.environ.get("FLEET_WARM", "1") != "0"
CONCURRENCY = int(os.environ.get("CONCURRENCY", "64"))
PG_BIN = os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin")
STATS_FLUSH = 11  # PGSTAT_IDLE_INTERVAL (10 s) and a second
SERVER_UID = 65534
HZ = os.sysconf("SC_CLK_TCK")
DB_PASSWORD = "fleet-bench-" + base64.b32encode(os.urandom(10)).decode().lower()


def log(*args):
    print("fleet:", *args, flush=True)


class Cluster:
    """A private PostgreSQL cluster: initdb, start, psql as the superuser over the socket, stop."""

    def __init__(self, root):
        self.dir = os.path.join(root, "pg")
        self.data = os.path.join(self.dir, "data")
        self.sockdir = os.path.join(self.dir, "socket")
        self.port = free_port()
        self.started = False
        os.makedirs(self.sockdir)
        for path in (self.dir, self.sockdir):
            os.chmod(path, 0o700)
        pwfile = os.path.join(self.dir, "superuser-password")
        with open(pwfile, "w") as f:
            f.write("admin-" + DB_PASSWORD)
        if os.getuid() == 0:
            for path in (self.dir, self.sockdir, pwfile):
                os.chown(path, SERVER_UID, SERVER_UID)
        self.server("initdb", "-D", self.data, "-U", "tokend_admin", f"--pwfile={pwfile}", "--auth-local=trust",
                    "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync")
        os.remove(pwfile)
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write(f"""
listen_addresses = '127.0.0.1'
port = {self.port}
unix_socket_directories = '{self.sockdir}'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
shared_buffers = 64MB
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = top
""")

    def server(self, command, *args, timeout=60):
        argv = [os.path.join(PG_BIN, command), *args]
        if os.getuid() == 0:
            argv = ["setpriv", f"--reuid={SERVER_UID}", f"--regid={SERVER_UID}", "--clear-groups", *argv]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        out = subprocess.run(argv, cwd=self.dir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, timeout=timeout, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"{command} failed: {out.stdout}")
        return out.stdout

    def start(self):
        self.started = True
        self.server("pg_ctl", "start", "-w", "-t", "30", "-D", self.data, "-l", os.path.join(self.dir, "server.log"))

    def stop(self):
        if self.started and os.path.exists(os.path.join(self.data, "postmaster.pid")):
            try:
                self.server("pg_ctl", "stop", "-w", "-t", "20", "-m", "immediate", "-D", self.data, timeout=30)
            except Exception as e:  # noqa: BLE001 — cleanup goes on
                log("stopping PostgreSQL:", e)
        self.started = False

    def postmaster(self):
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            return int(f.readline())

    def sql(self, text, database="postgres"):
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        out = subprocess.run([os.path.join(PG_BIN, "psql"), "-X", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1",
                              "-h", self.sockdir, "-p", str(self.port), "-U", "tokend_admin", "-d", database,
                              "-c", text], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             timeout=30)
        if out.returncode != 0:
            raise RuntimeError(f"psql: {text}: {out.stderr}")
        return out.stdout.strip()

    def xacts(self):
        return int(self.sql("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'tokend'"))

    def backends(self):
        return int(self.sql("SELECT count(*) FROM pg_stat_activity WHERE datname = 'tokend'"))

    def backend_cpu_s(self):
        """User + system CPU of the postmaster's children that serve the tokend database (its backends)."""
        pids = self.sql("SELECT pid FROM pg_stat_activity WHERE datname = 'tokend'").split()
        return sum(cpu_s(int(p)) for p in pids)

    def statements(self):
        rows = self.sql("SELECT calls, round(total_exec_time::numeric, 1), regexp_replace(query, '\\s+', ' ', 'g') "
                        "FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = 'tokend'")
        out = {}
        for line in rows.splitlines():
            calls, ms, query = line.split("\t", 2)
            key = query[:160]
            c, m = out.get(key, (0, 0.0))
            out[key] = (c + int(calls), m + float(ms))
        return out


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cpu_s(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / HZ
    except (OSError, IndexError, ValueError):
        return 0.0


def loadavg():
    return float(open("/proc/loadavg").read().split()[0])


class Notifications:
    """Every host's NOTIFY_SOCKET, read by one thread that stamps each message with the monotonic clock."""

    def __init__(self):
        self.selector = selectors.DefaultSelector()
        self.lock = threading.Lock()
        self.messages = {}  # path -> [(time, line)]
        self.sockets = []
        threading.Thread(target=self.loop, daemon=True).start()

    def bind(self, path):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(path)
        s.setblocking(False)
        with self.lock:
            self.messages[path] = []
        self.sockets.append(s)
        self.selector.register(s, selectors.EVENT_READ, path)

    def loop(self):
        while True:
            if not self.sockets:
                time.sleep(0.01)
                continue
            for key, _ in self.selector.select(0.1):
                try:
                    data = key.fileobj.recv(65536)
                except BlockingIOError:
                    continue
                stamp = time.monotonic()
                with self.lock:
                    self.messages[key.data].extend((stamp, line) for line in data.decode().split("\n") if line)

    def ready_since(self, path, since):
        """(time of the first READY=1 at or after `since`, the STATUS= sent with it) or None."""
        with self.lock:
            messages = list(self.messages[path])
        for i, (stamp, line) in enumerate(messages):
            if stamp >= since and line == "READY=1":
                status = next((l[7:] for s, l in messages[i:] if s == stamp and l.startswith("STATUS=")), "")
                return stamp, status
        return None


class Bench:
    def __init__(self, tokend, token_url, access_log):
        self.tokend = tokend
        self.token_url = token_url
        self.access_log = access_log
        self.root = tempfile.mkdtemp(prefix="tokend-fleet-")
        os.chmod(self.root, 0o711)  # uid 65534 passes through to its cluster directory
        self.procs = []
        self.cluster = None
        self.notify = Notifications()
        self.secrets = os.path.join(self.root, "secrets")
        os.makedirs(self.secrets, mode=0o700)
        self.secret = self.private("client-secret", "s3cret")
        self.key = self.private("fleet.key", base64.b64encode(os.urandom(32)).decode() + "\n")
        self.password = self.private("fleet-db-password", DB_PASSWORD)
        self.hosts = {}  # (mode, index) -> dir

    def private(self, name, text):
        path = os.path.join(self.secrets, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o600)
        return path

    def start_cluster(self):
        self.cluster = Cluster(self.root)
        self.cluster.start()
        self.cluster.sql(f"CREATE ROLE tokend LOGIN PASSWORD '{DB_PASSWORD}'")
        self.cluster.sql("CREATE DATABASE tokend OWNER tokend")
        self.cluster.sql("CREATE EXTENSION pg_stat_statements")  # read from the postgres database: no noise in tokend
        self.pg_version = self.cluster.sql("SHOW server_version")

    def host_dir(self, fleet, index):
        """The host's config dir (written once), its sockets; the state dir is emptied by each run."""
        mode = "f" if fleet else "s"
        key = (mode, index)
        if key in self.hosts:
            return self.hosts[key]
        d = os.path.join(self.root, f"{mode}{index}")
        instances = os.path.join(d, "config", "instances")
        os.makedirs(instances)
        settings = (f'startup_timeout = "600s"\n[refresh]\nmax_concurrent = {CONCURRENCY}\n'
                    f"per_endpoint_concurrent = {CONCURRENCY}\n")
        if fleet:
            settings += (f'[fleet]\ndatabase = "postgresql://tokend@127.0.0.1:{self.cluster.port}/tokend'
                         f'?sslmode=disable"\npassword = {{ file = "{self.password}" }}\nkey = {{ file = "{self.key}" }}\n'
                         f'host_id = "host-{index}"\nlease = "20s"\n')
        with open(os.path.join(d, "config", "tokend.toml"), "w") as f:
            f.write(settings)
        for i in range(INSTANCES):  # as scripts/bench's scale part writes them: the same on every host
            with open(os.path.join(instances, f"i{i}.toml"), "w") as f:
                f.write(f'token_url = "{self.token_url}"\n[variables]\nclient_id = "i{i}"\n'
                        f'client_secret = {{ file = "{self.secret}" }}\n')
        self.notify.bind(os.path.join(d, "notify.sock"))
        self.hosts[key] = d
        return d

    def provider_requests(self):
        with open(self.access_log, "rb") as f:
            return sum(1 for _ in f)

    def wait(self, condition, timeout, what):
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def stop_hosts(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []

    def run(self, mode, n):
        fleet = mode != "standalone"
        dirs = [self.host_dir(fleet, i) for i in range(n)]
        if mode == "fleet":
            self.cluster.sql("DROP TABLE IF EXISTS tokend_fleet", database="tokend")
        for d in dirs:
            shutil.rmtree(os.path.join(d, "state"), ignore_errors=True)
            os.makedirs(os.path.join(d, "state"))
        if fleet:
            rows_before = int(self.cluster.sql("SELECT count(*) FROM pg_class WHERE relname = 'tokend_fleet'",
                                               database="tokend"))
            if rows_before:
                rows_before = int(self.cluster.sql("SELECT count(*) FROM tokend_fleet WHERE length(id) = 32",
                                                   database="tokend"))
            # Every backend of the tokend database gone: their counters are all in pg_stat_database.
            self.wait(lambda: self.cluster.backends() == 0, 30, "the last run's backends to exit")
            self.cluster.sql("SELECT pg_stat_statements_reset()")
            x0 = self.cluster.xacts()
        load = loadavg()
        r0 = self.provider_requests()
        launched = []
        t0 = time.monotonic()
        for i, d in enumerate(dirs):
            env = dict(os.environ, NOTIFY_SOCKET=os.path.join(d, "notify.sock"))
            logfile = open(os.path.join(d, f"{mode}.log"), "w")
            started = time.monotonic()
            p = subprocess.Popen([self.tokend, "run", "--config-dir", os.path.join(d, "config"), "--state-dir",
                                  os.path.join(d, "state"), "--socket", os.path.join(d, "tokend.sock"),
                                  "--log-level", "info"], env=env, stdin=subprocess.DEVNULL,
                                 stdout=logfile, stderr=subprocess.STDOUT)
            logfile.close()
            self.procs.append(p)
            launched.append(started)
        ready = [None] * n

        def all_ready():
            for i, d in enumerate(dirs):
                if ready[i] is None:
                    ready[i] = self.notify.ready_since(os.path.join(d, "notify.sock"), launched[i])
                    if ready[i] is None and self.procs[i].poll() is not None:
                        raise RuntimeError(f"host {i} ({mode}) exited with {self.procs[i].returncode}: "
                                           + open(os.path.join(d, f"{mode}.log")).read()[-2000:])
            return all(ready)

        self.wait(all_ready, 900, f"READY=1 from {n} hosts ({mode})")
        t_ready = max(r[0] for r in ready)
        ready_s = [round(r[0] - launched[i], 3) for i, r in enumerate(ready)]
        statuses = [r[1] for r in ready]
        time.sleep(SETTLE)
        requests = self.provider_requests() - r0
        host_cpu = [round(cpu_s(p.pid), 3) for p in self.procs]
        cached = [sum(1 for f in os.listdir(os.path.join(d, "state")) if f.endswith(".json")) for d in dirs]
        result = {"mode": mode, "hosts": n, "instances": INSTANCES, "loadavg_at_start": load,
                  "ready_s": ready_s, "ready_median_s": round(statistics.median(ready_s), 3),
                  "ready_max_s": max(ready_s), "all_ready_s": round(t_ready - t0, 3), "provider_requests": requests,
                  "host_cpu_s": host_cpu, "cached_files": cached, "status": statuses,
                  "unreachable_at_ready": sum("unreachable" in st for st in statuses),
                  "fleet_log": [fleet_lines(os.path.join(d, f"{mode}.log")) for d in dirs] if fleet else [],
                  "startup_steps_ms": [startup_steps(os.path.join(d, f"{mode}.log")) for d in dirs]}
        if fleet:
            result["connections"] = self.cluster.backends()
            result["postgres_cpu_s"] = round(self.cluster.backend_cpu_s(), 3)
            result["rows_before"] = rows_before
            startup_statements = self.cluster.statements()
            # Everything up to the settle has been reported once the backends' idle flush has run.
            time.sleep(max(0.0, t_ready + SETTLE + STATS_FLUSH - time.monotonic()))
            x1 = self.cluster.xacts()
            idle_start = time.monotonic()
            s1 = self.cluster.statements()
            r1 = self.provider_requests()
            time.sleep(IDLE)
            s2 = self.cluster.statements()
            idle_s = time.monotonic() - idle_start
            idle_requests = self.provider_requests() - r1
            self.stop_hosts()
            self.wait(lambda: self.cluster.backends() == 0, 30, "the backends to exit")
            x2 = self.cluster.xacts()
            s3 = self.cluster.statements()
            startup_window = t_ready - t0
            result.update({
                "rows_after": int(self.cluster.sql("SELECT count(*) FROM tokend_fleet WHERE length(id) = 32",
                                                   database="tokend")),
                "startup_xacts": x1 - x0, "startup_window_s": round(startup_window, 3),
                "startup_xacts_per_s_per_host": round((x1 - x0) / startup_window / n, 1),
                "idle_xacts": x2 - x1, "idle_window_s": round(idle_s, 3),
                "idle_xacts_per_s_per_host": round((x2 - x1) / idle_s / n, 3),
                "idle_statements": sum(c for c, _ in s2.values()) - sum(c for c, _ in s1.values()),
                "statements_until_idle": sum(c for c, _ in s1.values()),
                "statements_until_stop": sum(c for c, _ in s2.values()),
                "statements_at_exit": sum(c for c, _ in s3.values()),
                "idle_provider_requests": idle_requests,
                "startup_statements": sorted(([c, round(ms, 1), q] for q, (c, ms) in startup_statements.items()),
                                             reverse=True)[:8],
            })
        else:
            self.stop_hosts()
        return result


def fleet_lines(path, most=3):
    """The host's first log lines about the fleet above info (what made it run on its own), shortened."""
    try:
        lines = open(path, errors="replace").read().splitlines()
    except OSError:
        return []
    picked = [l for l in lines if "fleet" in l.lower() and ("warning" in l or "error" in l)]
    return [l[:300] for l in picked[:most]] + ([f"… {len(picked) - most} more"] if len(picked) > most else [])


def startup_steps(path):
    """The step timings of tokend's `ready` log line (milliseconds), if it logged one."""
    try:
        text = open(path, errors="replace").read()
    except OSError:
        return {}
    for line in text.splitlines():
        if " ready" in line and "_ms" in line:
            steps = {}
            for word in line.replace(",", " ").split():
                if "_ms=" in word:
                    name, _, value = word.partition("=")
                    try:
                        steps[name[:-3]] = int(value.strip("'\""))
                    except ValueError:
                        pass
            return steps
    return {}


def main():
    out, tokend, token_url, access_log, machine = sys.argv[1:6]
    machine = json.loads(machine)
    bench = Bench(tokend, token_url, access_log)

    def stop(signum, _frame):
        raise SystemExit(128 + signum)

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, stop)
    began = time.monotonic()
    runs = []
    try:
        bench.start_cluster()
        log(f"PostgreSQL {bench.pg_version} on 127.0.0.1:{bench.cluster.port}; {INSTANCES} instances per host")
        modes = ["standalone", "fleet"] + (["fleet-warm"] if WARM else [])
        for n in HOSTS:
            for mode in modes:
                result = bench.run(mode, n)
                log(json.dumps({k: v for k, v in result.items() if k not in ("startup_statements", "ready_s",
                                                                              "host_cpu_s", "startup_steps_ms",
                                                                              "status", "fleet_log")}))
                runs.append(result)
    finally:
        bench.stop_hosts()
        if bench.cluster:
            bench.cluster.stop()
        shutil.rmtree(bench.root, ignore_errors=True)
    machine["postgresql"] = bench.pg_version
    with open(out, "w") as f:
        json.dump({"machine": machine, "instances": INSTANCES, "concurrency": CONCURRENCY, "lease": "20s",
                   "min_lead": "60s", "token_lifetime_s": 3600, "settle_s": SETTLE, "idle_s": IDLE,
                   "stats_flush_s": STATS_FLUSH, "duration_s": round(time.monotonic() - began, 1),
                   "postgres_settings": "fsync, synchronous_commit and full_page_writes off",
                   "runs": runs}, f, indent=1)
        f.write("\n")
    log(f"wrote {out} in {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
