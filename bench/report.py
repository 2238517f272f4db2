#!/usr/bin/env python3
"""Turns bench/*.json (and bench/profile-*.txt) into the tables of BENCHMARKS.md, each between its own
<!-- NAME:begin --> / <!-- NAME:end --> markers; text outside the markers is kept. Run by scripts/bench."""
import json
import pathlib
import re

BENCH = pathlib.Path(__file__).resolve().parent
DOC = BENCH.parent / "BENCHMARKS.md"
INTRO = ("# Benchmarks\n\nWritten by `make bench` (`scripts/bench`); the raw numbers are in `bench/*.json`. Benchmarks "
         "are not tests: nothing here passes or fails on a time, but every table compares.\n")


def load(name):
    path = BENCH / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def machine_line(m):
    busy = " — other work was competing for the cores" if m["loadavg_at_start"] > m["cores"] / 2 else ""
    return (f"{m['date']}, {m['cores']} cores, load average {m['loadavg_at_start']} at the start{busy}; "
            f"tokend {m['tokend']} (binary sha256 {m.get('tokend_sha256', '?')}…), nginx {m['nginx']}"
            + (f", Go {m['go']}" if m.get("go") else "") + ".")


def ratio(a, b):
    return f"{a / b:.2f}" if b else "–"


def median_runs(s):
    """(label, mode, connections) -> the run with the median req/s of the rounds (REPEAT interleaved rounds)."""
    groups = {}
    for r in s["runs"]:
        groups.setdefault((r["label"], r["mode"], r["connections"]), []).append(r)
    return {k: sorted(v, key=lambda r: r["rps"])[len(v) // 2] for k, v in groups.items()}


def server_cpu(*runs):
    """The servers' CPU per request (user + system µs), for runs that recorded it (older JSON did not)."""
    def one(r):
        if not r or r.get("server_user_us") is None:
            return "–"
        return f"{r['server_user_us']:.1f} + {r['server_sys_us']:.1f}"
    return " / ".join(one(r) for r in runs)


def cpu_ratio(a, b):
    """a's server CPU per request (user + system) over b's, in the same run."""
    if not a or not b or a.get("server_user_us") is None or b.get("server_user_us") is None:
        return "–"
    return ratio(a["server_user_us"] + a["server_sys_us"], b["server_user_us"] + b["server_sys_us"])


def serving_section(s):
    runs = median_runs(s)
    out = [f"## Serving: GET /v1/tokens/NAME over the Unix socket\n\n{machine_line(s['machine'])} `bench/loadgen.c` "
           f"(one epoll thread) on core {s['client_cpu']}, the server on core {s['server_cpu']} (`taskset`), "
           f"{s['duration_s']} s per run after a warm-up, the median by req/s of {s.get('repeat', 1)} interleaved "
           "round(s) (with that run's latencies), one request in flight per connection, every response checked (200, Content-Length, the token in the body). nginx (one worker) serves the same JSON body with "
           "`return 200`. *Go*: Go's `net/http` server (`bench/gopeer/main.go`, `GOMAXPROCS=1`) serving the same body, "
           "the stack the peer daemons (Vault Agent's listener, tbot) answer with. *bare NIO*: a SwiftNIO server with tokend's HTTP/1 pipeline (`IdleStateHandler`, "
           "`configureHTTPServerPipeline`) and a handler that only writes the same body, one event loop on the same core "
           "(`tokend-example-endpoint --static-unix-socket`): what NIOHTTP1 costs before tokend does anything. "
           "*NIO floor*: SwiftNIO with no HTTP handler at all, answering each blank line with fixed bytes (`--raw`): "
           "no SwiftNIO server can be faster (decision 0006). "
           "*ceiling*: the generator against its own trivial `--serve` server; *client CPU*: the "
           "generator's share of its core (near 1.0 would make it the bottleneck). *server CPU per request*: the "
           "server process's user + system CPU time (`/proc/PID/stat`, nginx's worker) over the warm-up and the run, "
           "divided by the requests made at the run's rate: all three make the same system calls per request (one "
           "`read`, one `write`, a share of an `epoll_wait`; `strace -c`), so the user part is each one's own work.\n"]
    for mode, title in (("keepalive", "keep-alive"), ("close", "one connection per request")):
        out.append(f"\n**{title}**\n\n| connections | tokend req/s | nginx req/s | **tokend/nginx** | Go req/s (p99 µs) "
                   "| **tokend/Go** | tokend p50 / p99 / p99.9 µs "
                   "| nginx p50 / p99 / p99.9 µs | **p99 tokend/nginx** | bare NIO req/s (p99 µs) | tokend/bare NIO "
                   "| NIO floor req/s (p99 µs) | tokend/NIO floor | ceiling req/s | client CPU: ceiling / tokend run "
                   "| server CPU per request, user + sys µs: tokend / nginx / Go / NIO floor | **server CPU tokend/Go** "
                   "| **server CPU tokend/NIO floor** | errors t/n |\n"
                   "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for c in sorted({k[2] for k in runs if k[1] == mode}):
            t, n, z, b, f, g = (runs.get((label, mode, c)) for label in ("tokend", "nginx", "ceiling", "nio", "floor", "go"))
            if not (t and n):
                continue
            lat = lambda r: f"{r['p50_us']:.0f} / {r['p99_us']:.0f} / {r['p999_us']:.0f}"
            ceiling, ceiling_cpu = (f"{z['rps']:.0f}", f"{z['client_cpu']:.2f}") if z else ("–", "–")
            bare, versus_bare = (f"{b['rps']:.0f} ({b['p99_us']:.0f})", ratio(t["rps"], b["rps"])) if b else ("–", "–")
            floor, versus_floor = (f"{f['rps']:.0f} ({f['p99_us']:.0f})", ratio(t["rps"], f["rps"])) if f else ("–", "–")
            go, versus_go = (f"{g['rps']:.0f} ({g['p99_us']:.0f})", ratio(t["rps"], g["rps"])) if g else ("–", "–")
            out.append(f"| {c} | {t['rps']:.0f} | {n['rps']:.0f} | **{ratio(t['rps'], n['rps'])}** | {go} | **{versus_go}** | "
                       f"{lat(t)} | {lat(n)} | "
                       f"**{ratio(t['p99_us'], n['p99_us'])}** | {bare} | {versus_bare} | {floor} | {versus_floor} | {ceiling} | "
                       f"{ceiling_cpu} / {t['client_cpu']:.2f} | {server_cpu(t, n, g, f)} | **{cpu_ratio(t, g)}** | **{cpu_ratio(t, f)}** | "
                       f"{t['errors']} / {n['errors']} |")
    if any(k[0] == "before" for k in runs):
        out.append("\n**before / after** (`SERVING_BEFORE_BIN`: the other tokend binary, in the same interleaved rounds)\n\n"
                   "| mode | connections | before req/s | after req/s | after/before | server CPU per request, user + sys µs: "
                   "before / after / NIO floor / Go | **after/before CPU** | **CPU before/NIO floor** | "
                   "**CPU after/NIO floor** | **CPU after/Go** | errors b/a |\n|---|---|---|---|---|---|---|---|---|---|---|")
        for mode in ("keepalive", "close"):
            for c in sorted({k[2] for k in runs if k[1] == mode and k[0] == "before"}):
                a, t, f, g = (runs.get((label, mode, c)) for label in ("before", "tokend", "floor", "go"))
                if not (a and t):
                    continue
                out.append(f"| {mode} | {c} | {a['rps']:.0f} | {t['rps']:.0f} | {ratio(t['rps'], a['rps'])} | "
                           f"{server_cpu(a, t, f, g)} | **{cpu_ratio(t, a)}** | **{cpu_ratio(a, f)}** | **{cpu_ratio(t, f)}** | "
                           f"**{cpu_ratio(t, g)}** | {a['errors']} / {t['errors']} |")
    return "\n".join(out) + "\n"


def shell_section(s):
    runs = s["runs"]
    base = next((r for r in runs if r["label"].startswith("curl → nginx")), None)
    direct = next((r for r in runs if r["label"].startswith("curl → tokend")), None)
    rounds = runs[0].get("rounds", 1)
    out = [f"## What a shell script pays per token\n\n{machine_line(s['machine'])} {runs[0]['calls']} calls in a bash "
           "loop, each answer checked (for the token; `status` for the instance's name); nothing pinned."
           + (f" {rounds} rounds of every command in turn, the median round's figure (the rounds in brackets)." if rounds > 1 else "")
           + "\n\n| per call | ms | vs `curl` → tokend | vs `curl` → nginx | answers checked |\n|---|---|---|---|---|"]
    for r in runs:
        spread = f" ({', '.join(f'{x:.2f}' for x in r['rounds_ms'])})" if r.get("rounds_ms") and rounds > 1 else ""
        out.append(f"| {r['label']} | {r['ms_per_call']:.2f}{spread} "
                   f"| {ratio(r['ms_per_call'], direct['ms_per_call']) if direct else '–'} "
                   f"| {ratio(r['ms_per_call'], base['ms_per_call']) if base else '–'} "
                   f"| {r['ok']} / {r['calls'] * rounds} |")
    return "\n".join(out) + "\n"


def scale_section(s):
    runs = s["runs"]
    mib = lambda kib: f"{kib / 1024:.0f} MiB"
    rows = [
        ("READY=1, empty cache", lambda r: f"{r['ready_cold_s']:.3f} s"),
        ("READY=1, warm cache (median of the runs)", lambda r: f"{r['ready_from_cache_s']:.3f} s ("
         + (f"runs: {', '.join(f'{x:.3f}' for x in r['ready_from_cache_runs_s'])}; " if r.get("ready_from_cache_runs_s") else "")
         + f"{r['requests_on_warm_start']} requests)"),
        ("first round, tokens/s (nginx's clock)", lambda r: f"{r['first_round_per_s']}"),
        ("instances / READY cold", lambda r: f"{r['ready_cold_per_s']}/s"),
        ("SIGHUP reload, 1 % of the files changed: READY=1", lambda r: f"{r['reload_ready_s']:.3f} s ({r['reload_changed_files']} files)"),
        ("… until the changed tokens are fetched", lambda r: f"{r['reload_until_fetched_s']:.3f} s ({r['reload_requests']} requests)"),
        ("RSS after the first round", lambda r: mib(r["rss_after_first_round_kib"])),
        ("… of which anonymous (heap, stacks) / file pages (the binary)", lambda r: (
            f"{mib(r['rss_anon_after_first_round_kib'])} / {mib(r['rss_file_after_first_round_kib'])}"
            if "rss_anon_after_first_round_kib" in r else "–")),
        ("RSS after the idle time / after a warm start", lambda r: f"{mib(r['rss_after_idle_kib'])} / {mib(r['rss_after_warm_start_kib'])}"),
        ("CPU over the idle time", lambda r: f"{r['idle_cpu_s']:.3f} s in {r['idle_s']} s ({r['idle_requests']} requests)"),
        ("`tokend check`", lambda r: f"{r['check_s']:.3f} s (exit {r['check_exit']})"),
    ]
    out = [f"## Scale: N instances against nginx as a static token endpoint on loopback\n\n{machine_line(s['machine'])} "
           f"Tokens live 1 h; tokend's `max_concurrent` and `per_endpoint_concurrent` are both {s['concurrency']} (all "
           "instances share one endpoint host, so the per-endpoint limit is the effective one), the same limit as the "
           "peer's. nginx (one worker) answers every POST with a fixed token and logs `$msec`, which times the first "
           "round by the provider's clock for tokend and the peer alike.\n",
           "| | " + " | ".join(f"{r['instances']} instances" for r in runs) + " |",
           "|---|" + "---|" * len(runs)]
    for name, cell in rows:
        out.append(f"| {name} | " + " | ".join(cell(r) for r in runs) + " |")
    if len(runs) >= 2:
        a, b = sorted(runs, key=lambda r: r["instances"])[:: len(runs) - 1]
        per = (b["rss_after_first_round_kib"] - a["rss_after_first_round_kib"]) / (b["instances"] - a["instances"])
        base = a["rss_after_first_round_kib"] - per * a["instances"]
        out.append(f"\nRSS after the first round ≈ {base / 1024:.0f} MiB + {per:.1f} KiB per instance (a line through "
                   f"{a['instances']} and {b['instances']} instances).")
    out.append("\n**The peer**: `bench/peer.py`, Python asyncio + aiohttp fetching the same tokens from the same nginx "
               f"with `asyncio.Semaphore({s['concurrency']})`, right after tokend's first round (tokend idle meanwhile).\n")
    out.append("| instances | tokend tokens/s | peer tokens/s | **tokend/peer** | tokend READY cold | peer fetching / "
               "incl. interpreter start | peer failures |\n|---|---|---|---|---|---|---|")
    for r in runs:
        p = r["peer"]
        out.append(f"| {r['instances']} | {r['first_round_per_s']} | {r['peer_per_s']} | "
                   f"**{ratio(r['first_round_per_s'], r['peer_per_s'])}** | {r['ready_cold_s']:.3f} s | "
                   f"{p['fetch_s']:.3f} s / {p['total_s']:.3f} s | {p['failures']} |")
    return "\n".join(out) + "\n"


def targets_section(serving, scale):
    rows = []

    def add(target, goal, measured, met):
        rows.append(f"| {target} | {goal} | {measured} | {'met' if met else '**missed**'} |")

    if serving:
        runs = median_runs(serving)
        t, n = runs.get(("tokend", "keepalive", 16)), runs.get(("nginx", "keepalive", 16))
        f = runs.get(("floor", "keepalive", 16))
        # The same measure for SwiftNIO with no HTTP handler in the same run: what any SwiftNIO server could reach.
        floor_rps = f"; the NIO floor {ratio(f['rps'], n['rps'])}×" if f and n else ""
        floor_p99 = f"; the NIO floor {ratio(f['p99_us'], n['p99_us'])}×" if f and n else ""
        if t and n:
            add("req/s at 16 connections (keep-alive)", "tokend ≥ nginx", f"{t['rps']:.0f} vs {n['rps']:.0f} "
                f"({ratio(t['rps'], n['rps'])}×{floor_rps})", t["rps"] >= n["rps"])
            add("p99 at 16 connections (keep-alive)", "≤ 1.5 × nginx", f"{t['p99_us']:.0f} µs vs {n['p99_us']:.0f} µs "
                f"({ratio(t['p99_us'], n['p99_us'])}×{floor_p99})", t["p99_us"] <= 1.5 * n["p99_us"])
    if scale:
        big = max(scale["runs"], key=lambda r: r["instances"])
        n = big["instances"]
        add(f"READY=1 from a warm cache, {n} instances", "< 1 s", f"{big['ready_from_cache_s']:.3f} s", big["ready_from_cache_s"] < 1)
        add(f"SIGHUP reload (1 % changed), {n} instances", "< 1 s", f"{big['reload_ready_s']:.3f} s", big["reload_ready_s"] < 1)
        per_minute = big["idle_cpu_s"] * 60 / big["idle_s"]
        add(f"idle CPU, {n} instances", "< 0.1 s per minute", f"{per_minute:.3f} s per minute", per_minute < 0.1)
        worst = max(big["rss_after_first_round_kib"], big["rss_after_idle_kib"], big["rss_after_warm_start_kib"])
        add(f"RSS, {n} instances", "< 64 MiB", f"{worst / 1024:.0f} MiB", worst < 64 * 1024)
        add(f"first-round fetch rate, {n} instances", "≥ the Python peer's", f"{big['first_round_per_s']}/s vs "
            f"{big['peer_per_s']}/s ({ratio(big['first_round_per_s'], big['peer_per_s'])}×)",
            big["first_round_per_s"] >= big["peer_per_s"])
    if not rows:
        return None
    return ("## Targets (issue #8, on this 2-core machine)\n\n| target | goal | measured | |\n|---|---|---|---|\n"
            + "\n".join(rows) + "\n")


def profile_section():
    files = sorted(BENCH.glob("profile-*.txt"))
    if not files:
        return None
    out = ["## Profiles of the misses (`scripts/bench profile`)\n\n`perf record -g` of the release binary, symbols "
           "demangled with `swift demangle --simplified`: the hottest functions by self time, and tokend's own "
           "functions by inclusive time (the full lists are in the files named).\n"]
    order = {"cold": 0, "warm": 1, "reload": 2, "check": 3, "serving": 4, "token": 5}
    for f in sorted(files, key=lambda f: (order.get(f.name.split("-")[1], 9), f.name)):
        parts, name = {}, None
        lines = f.read_text().splitlines()
        for line in lines[1:]:
            if line.startswith("## "):
                name = line[3:]
                parts[name] = []
            elif name:
                parts[name].append(line.strip())
        body = "self time:\n" + "\n".join(parts.get("self time", [])[:8])
        body += "\n\ninclusive, tokend's own:\n" + "\n".join(parts.get("inclusive, tokend's own functions", [])[:8])
        out.append(f"**{lines[0].lstrip('# ')}** (`bench/{f.name}`)\n\n```\n{body}\n```\n")
    return "\n".join(out)


def fairness_section(f):
    """Issue #18: two callers' token requests and the daemon's RSS while one uid holds connections and another
    pipelines without reading, for each binary of the run (before and after, side by side)."""
    m = f["machine"]
    runs = f["runs"]
    lines = [
        "## Fairness under attack (issue #18, `scripts/bench fairness`)\n",
        f"{m['date']}, {m['cores']} cores, load average {m['loadavg_at_start']} at the start; one run of each binary, "
        f"one after the other. uid 65534 holds {f['attack_connections']} connections (a third idle, a third trickling a "
        "head a byte every 2 s, a third watch streams; closed ones reopened every second) and uid 65533 pipelines "
        "token requests on three connections without reading; meanwhile root (an admin) and uid 4242 each ask for "
        f"the token on a new connection every 20 ms for {f['duration_s']:.0f} s (2 s timeout). Release binaries, "
        "default settings (`max_connections_per_uid` 64, `request_head_timeout` 10 s).\n",
        "| | " + " | ".join(f"{r['label']}" for r in runs) + " |",
        "|---|" + "---|" * len(runs),
    ]
    for caller in runs[0]["callers"]:
        cells = []
        for r in runs:
            c = r["callers"][caller]
            failures = ", ".join(f"{n}× {k}" for k, n in sorted(c.get("failures", {}).items()))
            cells.append(f"{c['ok']} of {c['requests']} ({c['share'] * 100:.1f} %), p50 {c['p50_ms']} ms, p99 {c['p99_ms']} ms"
                         + (f"; failed: {failures}" if failures else ""))
        lines.append(f"| {caller}: answered with the token | " + " | ".join(cells) + " |")
    lines.append("| uid 65534: connections open a second after connecting, not refused (most seen; includes ones not yet "
                 "accepted) | " + " | ".join(str(r["attacker_connections_held"]) for r in runs) + " |")
    lines.append("| uid 65534: connections answered 503 | " + " | ".join(str(r.get("attacker_answered_503", "–")) for r in runs) + " |")
    lines.append("| uid 65533: pipelined bytes the daemon took | "
                 + " | ".join(f"{(r['pipelined_bytes_taken'] or 0) / 1e6:.1f} MB" for r in runs) + " |")
    lines.append("| daemon RSS before → peak → 5 s after | "
                 + " | ".join(f"{r['rss_kib']['before'] / 1024:.0f} → {r['rss_kib']['peak'] / 1024:.0f} → "
                              f"{r['rss_kib']['after'] / 1024:.0f} MiB" for r in runs) + " |")
    lines.append("| the daemon | " + " | ".join("still running" if r["daemon_survived"] else
                                                   f"**died** (exit status {r.get('daemon_exit_status')})" for r in runs) + " |")
    lines.append("\nBinaries: " + "; ".join(f"{r['label']} `{r['binary']}`" for r in runs) + ".\n")
    return "\n".join(lines)


def fleet_section(f):
    """Issue #19: N hosts × M instances, standalone vs fleet (cold table) vs fleet-warm (table kept), one run."""
    m = f["machine"]
    by = {(r["mode"], r["hosts"]): r for r in f["runs"]}
    hosts = sorted({r["hosts"] for r in f["runs"]})
    warm = any(r["mode"] == "fleet-warm" for r in f["runs"])
    loads = ", ".join(f"{r['loadavg_at_start']}" for r in f["runs"])
    out = [f"## Fleet mode: N hosts sharing one PostgreSQL table (issue #19, `scripts/bench fleet`)\n\n"
           f"{machine_line(m)} PostgreSQL {m.get('postgresql', '?')}, a private cluster on loopback "
           f"({f['postgres_settings']}: a benchmark, not a database to keep). Every host is a tokend of its own "
           f"(config dir, empty state dir, socket, `NOTIFY_SOCKET`) with the same {f['instances']} instances against the "
           f"scale part's nginx token endpoint (tokens live 1 h, so each host's first round is all there is), "
           f"`max_concurrent` and `per_endpoint_concurrent` {f['concurrency']}, `lease` {f['lease']}, `min_lead` "
           f"{f['min_lead']}; the N hosts are launched at the same moment, all on the same {m['cores']} cores. "
           "*standalone*: no `[fleet]`; *fleet*: `[fleet]` with the table dropped first; *fleet, warm*: the table as the "
           "fleet run left it, state dirs empty (hosts joining a fleet that has the tokens). READY=1 is timed per host "
           "from its launch; provider requests are nginx's access-log lines until every host is ready and "
           f"{f['settle_s']:g} s more. Database transactions are `xact_commit + xact_rollback` of the tokend database "
           "(`pg_stat_database`) per second per host: start-up from the launch to the last READY=1 (read "
           f"{f['stats_flush_s']} s later, once the backends have reported), idle over the next {f['idle_s']:g} s and until the "
           "hosts have exited; they include autovacuum's, so the statements tokend ran while idle "
           "(`pg_stat_statements`, all hosts) are given with them. "
           f"Load average at each run's start: {loads}. The whole run took {f['duration_s'] / 60:.1f} min.\n",
           "| hosts | provider requests: standalone / fleet | **fleet/standalone** | READY=1 per host, median / max: "
           "standalone | … fleet | **fleet/standalone** (median) | DB transactions/s per host, fleet: start-up / idle "
           "(tokend's statements while idle) "
           + ("| fleet, warm: requests, READY=1 median / max, transactions/s per host start-up / idle " if warm else "")
           + "|\n|---|---|---|---|---|---|---|" + ("---|" if warm else "")]
    secs = lambda r: f"{r['ready_median_s']:.2f} / {r['ready_max_s']:.2f} s"
    db = lambda r: (f"{r['startup_xacts_per_s_per_host']:,.0f} / {r['idle_xacts_per_s_per_host']:.2f} "
                    f"({r.get('idle_statements', '?')} statements)")
    for n in hosts:
        s, fl, w = by.get(("standalone", n)), by.get(("fleet", n)), by.get(("fleet-warm", n))
        if not (s and fl):
            continue
        row = (f"| {n} × {f['instances']} | {s['provider_requests']:,} / {fl['provider_requests']:,} | "
               f"**{ratio(fl['provider_requests'], s['provider_requests'])}** | {secs(s)} | {secs(fl)} | "
               f"**{ratio(fl['ready_median_s'], s['ready_median_s'])}** | "
               f"{db(fl)} |")
        if warm:
            row += f" {w['provider_requests']:,}, {secs(w)}, {db(w)} |" if w else " – |"
        out.append(row)
    said = []
    for n in hosts:
        s, fl = by.get(("standalone", n)), by.get(("fleet", n))
        if not (s and fl):
            continue
        slower = fl["ready_median_s"] / s["ready_median_s"] if s["ready_median_s"] else 0
        line = (f"{n} host{'s' if n > 1 else ''} asked the provider {fl['provider_requests']:,} times in fleet mode vs "
                f"{s['provider_requests']:,} standalone (the ideal is {f['instances']:,})")
        line += (f", and a host took {slower:.1f}× as long to READY=1 ({fl['ready_median_s']:.2f} s vs "
                 f"{s['ready_median_s']:.2f} s median, {fl['ready_max_s']:.2f} s vs {s['ready_max_s']:.2f} s max)"
                 if slower >= 1.2 else f", READY=1 {fl['ready_median_s']:.2f} s vs {s['ready_median_s']:.2f} s median")
        logged = [lines[0] for lines in fl.get("fleet_log", []) if lines and "unreachable" in lines[0]]
        if logged:
            reasons = sorted({x.rsplit(": ", 1)[-1].rstrip('"') for x in logged})
            line += (f"; {len(logged)} of the {n} hosts logged `fleet database unreachable; refreshing on our own` "
                     f"during the start-up ({', '.join(f'`{r}`' for r in reasons)}; "
                     f"{fl.get('unreachable_at_ready', 0)} still said so at READY=1)")
        w = by.get(("fleet-warm", n))
        if w:
            line += (f"; joining a table that held {w['rows_before']:,} of the {f['instances']:,} tokens, the warm hosts "
                     f"asked {w['provider_requests']:,} times, READY=1 {w['ready_median_s']:.2f} s median")
        said.append(line + ".")
    if said:
        fell_back = any(r.get("unreachable_at_ready") for r in f["runs"] if r["mode"] != "standalone")
        note = (" Some hosts had marked the fleet unreachable by READY=1 (a store call outlasted its 2 s limit) and "
                "refreshed on their own, as SPEC §14's fallback says." if fell_back else
                " No host fell back to fetching alone. The extra start-up time in fleet mode is the database round "
                "trips of the cold table (a batched read, then a lease and a publish per instance); in the first "
                "version of this run each host sent all 1,000 calls at a 4-connection pool at once, the calls timed "
                "out in its queue and every host fell back to fetching alone (10,000 requests for 10 hosts): reads "
                "are now batched (250 rows a query) and at most 8 calls are in flight per host.")
        out.append("\n" + " ".join(said) + note)
    out.append("\n**Where the time goes** (fleet runs): the hosts' CPU until the settle (sum over the hosts), the "
               "CPU of the PostgreSQL backends still open then, the transactions in all, the connections open, and the statements run most "
               "during start-up (`pg_stat_statements`, calls across all hosts).\n")
    out.append("| run | hosts' CPU: standalone / fleet | backends' CPU | transactions (start-up / idle) | "
               "connections | busiest statements (calls) |\n|---|---|---|---|---|---|")
    for n in hosts:
        s = by.get(("standalone", n))
        for mode in ("fleet", "fleet-warm"):
            r = by.get((mode, n))
            if not r:
                continue
            top = "; ".join(f"`{q[:60]}…` ({c:,})" if len(q) > 60 else f"`{q}` ({c:,})"
                            for c, _, q in r["startup_statements"][:3])
            out.append(f"| {mode}, {n} hosts | {sum(s['host_cpu_s']) if s else 0:.1f} / {sum(r['host_cpu_s']):.1f} s | "
                       f"{r['postgres_cpu_s']:.1f} s | {r['startup_xacts']:,} / {r['idle_xacts']:,} | "
                       f"{r['connections']} | {top} |")
    if f.get("note"):
        out.append("\n" + f["note"])
    return "\n".join(out) + "\n"


def replace(text, name, body):
    section = f"<!-- {name}:begin -->\n{body}<!-- {name}:end -->\n"
    pattern = re.compile(rf"<!-- {name}:begin -->.*?<!-- {name}:end -->\n", re.S)
    return pattern.sub(lambda _: section, text) if pattern.search(text) else text + "\n" + section


def main():
    text = DOC.read_text() if DOC.exists() else INTRO
    serving, shell, scale, fairness = load("serving"), load("shell"), load("scale"), load("fairness")
    fleet = load("fleet")
    sections = [("targets", targets_section(serving, scale)),
                ("serving", serving and serving_section(serving)),
                ("shell", shell and shell_section(shell)),
                ("scale", scale and scale_section(scale)),
                ("fairness", fairness and fairness_section(fairness)),
                ("fleet", fleet and fleet_section(fleet)),
                ("profile", profile_section())]
    for name, body in sections:
        if body:
            text = replace(text, name, body)
    DOC.write_text(text)


if __name__ == "__main__":
    main()
