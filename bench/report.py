"""The Markdown report of one benchmark run (the raw numbers go to JSON beside it)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from bench import whmcs_index
from bench.procs import MACHINE, OTHER, POSTGRES_DB, POSTGRES_OTHER

ACK_P99_TARGET_MS = 50.0
RATIO_TARGET = 0.20
# CPU outside the benchmark's processes (% of one core) above which a window is flagged.
NOISE_PERCENT = 25.0


@dataclass
class Report:
    started_at: str
    machine: dict[str, Any]
    code: dict[str, Any]
    settings: dict[str, Any]
    phases: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    code_after: dict[str, Any] = field(default_factory=dict)


def fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def cpu_of(cpu: dict[str, dict[str, float]], name: str) -> float | None:
    return cpu.get(name, {}).get("total")


def ratio(report: Report, connections: int) -> float | None:
    """End-to-end messages/s at `connections` over the ceiling's requests/s."""
    ceiling = report.phases.get("ceiling", {}).get("closed", {}).get("rate_per_s")
    runs = report.phases.get("e2e", {}).get("runs", [])
    e2e = next((r["messages_per_s"] for r in runs if r["connections"] == connections), None)
    if not ceiling or e2e is None:
        return None
    return float(e2e) / float(ceiling)


def markdown(report: Report) -> str:
    m = report.machine
    s = report.settings
    lines = [
        f"# Benchmark {report.started_at}",
        "",
        f"Machine: {m['cores']} cores ({m['cpu_model']}), Python {m['python']}, "
        f"{m['platform']}; " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()) + ".",
        f"PostgreSQL: {', '.join(f'{k} {v}' for k, v in s['postgres'].items())}.",
        code_line(report),
        "",
        "Settings: "
        + ", ".join(f"{k}={v}" for k, v in s.items() if k not in ("postgres", "service_env"))
        + "; service env: "
        + ", ".join(f"{k}={v}" for k, v in s["service_env"].items())
        + ".",
        "",
        "| phase | load | n | throughput | p50 | p99 | notes |",
        "|---|---|---:|---:|---:|---:|---|",
        *summary_rows(report),
    ]
    lines += cpu_table(report)
    noisy = [
        f"{label} ({cpu[OTHER]['total']:.0f} %)"
        for label, cpu in cpu_windows(report)
        if cpu.get(OTHER, {}).get("total", 0.0) > NOISE_PERCENT
    ]
    if noisy:
        lines += [
            "",
            f"WARNING: more than {NOISE_PERCENT:.0f} % of a core went to processes outside the "
            "benchmark (other users' tests?) during: " + ", ".join(noisy) + ".",
        ]
    lines += activity_tables(report)
    lines += profile_tables(report)
    if report.errors:
        lines += ["", "Errors:", *(f"- {e}" for e in report.errors)]
    return "\n".join(lines) + "\n"


def code_line(report: Report) -> str:
    code = report.code
    line = f"Code: {code.get('directory', '')} at commit {code.get('commit') or '?'}"
    if code.get("changed_files"):
        line += f" plus uncommitted changes (content hash {code['changes_sha1']}) to " + ", ".join(
            code["changed_files"]
        )
    else:
        line += ", no uncommitted changes to the service"
    if report.code_after and report.code_after != code:
        line += " — WARNING: the code changed while the benchmark ran"
    return line + "."


def summary_rows(report: Report) -> list[str]:
    p = report.phases
    connections = report.settings["connections"]
    rows: list[str] = []
    if "ceiling" in p:
        c = p["ceiling"]["closed"]
        rows.append(
            f"| 1 ceiling: bare aiohttp | closed, {c['connections']} conns | {fmt(c['requests'])} "
            f"| {fmt(c['rate_per_s'])} req/s | {fmt(c['p50_ms'], 2)} ms "
            f"| {fmt(c['p99_ms'], 2)} ms | errors {c['errors']} |"
        )
    if "ack" in p:
        c = p["ack"]["closed"]
        rows.append(
            f"| 2 webhook ack | closed, {c['connections']} conns | {fmt(c['requests'])} "
            f"| {fmt(c['rate_per_s'])} req/s | {fmt(c['p50_ms'], 2)} ms "
            f"| {fmt(c['p99_ms'], 2)} ms | errors {c['errors']}; max {fmt(c['max_ms'])} ms; "
            f"inbox pending at end {fmt(c['backlog_at_end']['inbox_pending'])} |"
        )
        rows.append(_open_row("2 webhook ack", p["ack"]["open"]))
        if "open_no_dispatch" in p["ack"]:
            rows.append(
                _open_row("2 diagnostic: ack, dispatcher off", p["ack"]["open_no_dispatch"])
            )
    for r in p.get("e2e", {}).get("runs", []):
        rows.append(
            f"| 3 end-to-end | closed, {r['connections']} conns | {fmt(r['messages'])} "
            f"| {fmt(r['messages_per_s'])} msg/s | {fmt(r['latency_p50_ms'], 0)} ms "
            f"| {fmt(r['latency_p99_ms'], 0)} ms | {_e2e_notes(r)} |"
        )
    if "history_run" in p.get("e2e", {}):
        r = p["e2e"]["history_run"]
        rows.append(
            f"| 3 diagnostic: e2e, database with history ({fmt(r['history_rows'])} answered "
            f"messages, ANALYZE) | closed, {r['connections']} conns | {fmt(r['messages'])} "
            f"| {fmt(r['messages_per_s'])} msg/s | {fmt(r['latency_p50_ms'], 0)} ms "
            f"| {fmt(r['latency_p99_ms'], 0)} ms | {_e2e_notes(r)} |"
        )
    if "drain" in p:
        d = p["drain"]
        rows.append(
            f"| 4 outbound drain | {fmt(d['rows'])} queued rows | {fmt(d['accepted'])} "
            f"| {fmt(d['sends_per_s'])} sends/s | – | – "
            f"| first→last send {fmt(d['first_to_last_send_s'], 2)} s; spawn→all accepted "
            f"{fmt(d['spawn_to_all_accepted_s'], 2)} s"
            f"{'' if d['complete'] else ' (INCOMPLETE)'}; fake failures {d['fake_failed']} |"
        )
    r32 = ratio(report, connections)
    if r32 is not None:
        rows.append(
            f"| 5 ratio e2e / ceiling | {connections} conns | | {r32:.2%} | | "
            f"| target ≥ {RATIO_TARGET:.0%}: {'met' if r32 >= RATIO_TARGET else 'MISSED'} |"
        )
    if "whmcs_index" in p:
        rows.append(whmcs_index.line(p["whmcs_index"]))
    return rows


def _e2e_notes(r: dict[str, Any]) -> str:
    answered = f"answered {fmt(r['answered'])}"
    if not r["complete"]:
        answered += (
            f" (INCOMPLETE {r['timeout_s']:.0f} s after the last ack; "
            "latencies of the answered only)"
        )
    return (
        f"{answered}; window {fmt(r['window_s'])} s; acks {fmt(r['ack']['rate_per_s'])} req/s, "
        f"ack p99 {fmt(r['ack']['p99_ms'])} ms"
    )


def _open_row(label: str, o: dict[str, Any]) -> str:
    drained = o["processing_drained_after_s"]
    if o["service_env"]:
        processing = "env " + ", ".join(f"{k}={v}" for k, v in o["service_env"].items())
    elif drained is not None:
        processing = f"processing drained {drained} s after the load"
    else:
        processing = (
            f"still {fmt(o['backlog_after_wait']['inbox_pending'])} pending "
            f"{o['drain_wait_s']:.0f} s after the load"
        )
    return (
        f"| {label} | open, {o['offered_rate_per_s']:.0f}/s × {o['offered_seconds']:.0f} s "
        f"| {fmt(o['requests'])} | {fmt(o['rate_per_s'])} req/s | {fmt(o['p50_ms'], 2)} ms "
        f"| {fmt(o['p99_ms'], 2)} ms | acks kept up: {fmt(o['acks_kept_up'])}; "
        f"p99 ≤ {ACK_P99_TARGET_MS:.0f} ms: {'met' if o['p99_target_met'] else 'MISSED'}; "
        f"max {fmt(o['max_ms'])} ms; errors {o['errors']}; inbox pending at end of load "
        f"{fmt(o['backlog_at_end']['inbox_pending'])}; {processing} |"
    )


def cpu_windows(report: Report) -> list[tuple[str, dict[str, dict[str, float]]]]:
    p = report.phases
    windows: list[tuple[str, dict[str, dict[str, float]]]] = []
    if "ceiling" in p:
        windows.append(("ceiling", p["ceiling"]["cpu_percent"]))
    if "ack" in p:
        windows.append(("ack closed", p["ack"]["closed_cpu_percent"]))
        windows.append(("ack open", p["ack"]["open_cpu_percent"]))
        if "open_no_dispatch_cpu_percent" in p["ack"]:
            windows.append(("ack open, dispatcher off", p["ack"]["open_no_dispatch_cpu_percent"]))
    for r in p.get("e2e", {}).get("runs", []):
        windows.append((f"e2e {r['connections']} conns", r["cpu_percent"]))
    if "history_run" in p.get("e2e", {}):
        windows.append(("e2e with history", p["e2e"]["history_run"]["cpu_percent"]))
    if "profiled_run" in p.get("e2e", {}):
        windows.append(("e2e profiled", p["e2e"]["profiled_run"]["cpu_percent"]))
    if "drain" in p:
        windows.append(("drain", p["drain"]["cpu_percent"]))
        if "profiled_run" in p["drain"]:
            windows.append(("drain profiled", p["drain"]["profiled_run"]["cpu_percent"]))
    if "whmcs_index" in p:
        windows.append(("WHMCS index sync", p["whmcs_index"]["cpu_percent"]))
    return windows


_CPU_COLUMNS = (
    "service",
    "bare server",
    "fake Cloud API",
    "load generator",
    whmcs_index.SYNC,
    whmcs_index.FAKE,
    POSTGRES_DB,
    POSTGRES_OTHER,
    OTHER,
    MACHINE,
)


def cpu_table(report: Report) -> list[str]:
    windows = cpu_windows(report)
    if not windows:
        return []
    names = [n for n in _CPU_COLUMNS if any(n in cpu for _, cpu in windows)]
    for _, cpu in windows:
        names += [n for n in cpu if n not in names]
    lines = [
        "",
        "CPU per window, total (system) — % of one core; machine: % of all cores; "
        "rest of the machine: CPU no process above accounts for (other users' load):",
        "",
        "| window | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for label, cpu in windows:
        cells = [
            f"{fmt(cpu[n]['total'])} ({fmt(cpu[n]['sys'])})" if n in cpu else "–" for n in names
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    waiting = [n for n in names if any("wait" in cpu.get(n, {}) for _, cpu in windows)]
    lines += [
        "",
        "Waiting for a CPU — time the process's threads were runnable but not running "
        "(scheduler run-queue time), % of the window; for PostgreSQL summed over backends:",
        "",
        "| window | " + " | ".join(waiting) + " |",
        "|---|" + "---:|" * len(waiting),
    ]
    for label, cpu in windows:
        cells = [fmt(cpu[n]["wait"]) if "wait" in cpu.get(n, {}) else "–" for n in waiting]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def activity_tables(report: Report) -> list[str]:
    """What the database was doing in the headline windows (pg_stat_activity samples)."""
    p = report.phases
    connections = report.settings["connections"]
    windows: list[tuple[str, dict[str, Any]]] = []
    if "ack" in p:
        windows.append(("webhook ack, open loop", p["ack"]["open_pg_activity"]))
    for r in p.get("e2e", {}).get("runs", []):
        if r["connections"] == connections:
            windows.append((f"e2e {r['connections']} conns", r["pg_activity"]))
    if "history_run" in p.get("e2e", {}):
        windows.append(("e2e with history", p["e2e"]["history_run"]["pg_activity"]))
    if "drain" in p:
        windows.append(("outbound drain", p["drain"]["pg_activity"]))
    lines: list[str] = []
    for label, activity in windows:
        if not activity:
            continue
        lines += [
            "",
            f"PostgreSQL during {label}: {activity['busy_backends_avg']} backends busy on "
            f"average ({fmt(activity['samples'])} samples of pg_stat_activity); by wait: "
            + ", ".join(f"{w} {n}" for w, n in activity["by_wait"]),
            "",
            "| statement | wait | backends (avg) |",
            "|---|---|---:|",
        ]
        lines += [
            f"| `{t['statement']}` | {t['wait']} | {t['backends_avg']} |"
            for t in activity["top"][:8]
        ]
    return lines


def profile_tables(report: Report) -> list[str]:
    lines: list[str] = []
    e2e = report.phases.get("e2e", {}).get("profiled_run")
    if e2e and e2e.get("profiles"):
        lines += [
            "",
            f"py-spy (100 Hz, samples of running threads), extra e2e run of "
            f"{fmt(e2e['messages'])} messages at {e2e['connections']} conns in a stack of its own"
            + (
                f", database with history ({fmt(e2e['history_rows'])} rows)"
                if e2e.get("history_rows")
                else ""
            )
            + f" ({fmt(e2e['messages_per_s'])} msg/s while sampled). Samples in `select` or "
            "a socket `write` are largely a runnable process waiting for a CPU: read them "
            "against its run-queue wait above.",
        ]
        lines += _profiles(e2e)
    drain = report.phases.get("drain", {}).get("profiled_run")
    if drain and drain.get("profiles"):
        lines += [
            "",
            f"py-spy (100 Hz, samples of running threads), extra outbound drain of "
            f"{fmt(drain['rows'])} rows ({fmt(drain['sends_per_s'])} sends/s while sampled):",
        ]
        lines += _profiles(drain)
    return lines


def _profiles(run: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for name, prof in run["profiles"].items():
        if prof is None:
            continue
        lines += [
            "",
            f"{name} ({fmt(cpu_of(run['cpu_percent'], name))} % of a core, "
            f"{fmt(prof['samples'])} samples); self time by package: "
            + ", ".join(f"{k} {v} %" for k, v in prof["self_by_package_percent"][:8]),
            "",
            "| top self | % | top inclusive | % |",
            "|---|---:|---|---:|",
        ]
        for (fs, ps), (fi, pi) in zip(
            prof["top_self_percent"], prof["top_inclusive_percent"], strict=False
        ):
            lines.append(f"| `{fs}` | {ps} | `{fi}` | {pi} |")
    return lines
