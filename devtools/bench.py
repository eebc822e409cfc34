"""``nox -s bench``: benchmarks of the dry-run hot paths; a table and ``build/bench.json``.

Contenders are alternated within one run and reported as medians and minimums, each against a
baseline measured in the same run: these machines are shared and noisy, so ratios matter more
than absolute figures. Runs against ``DATABASE_URL`` in a database of its own (created and
dropped here).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from rich.console import Console
from rich.table import Table

from devtools.localdb import REPO_ROOT, with_database
from devtools.seed import demo_leads, seed_tenant
from dry_run import contacts, ledger
from dry_run.policy import Lead, Tenant, decide_batch
from dry_run.service import run_dry_run
from migrate.files import default_migrations_dir
from migrate.runner import Runner

# A Wednesday noon in São Paulo: inside every quiet-hours window, so WhatsApp decisions count.
NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
UNCAPPED = dict.fromkeys(("whatsapp", "email", "calendar"), (1000000, 1000000))
OUTPUT = REPO_ROOT / "build" / "bench.json"


@dataclass(frozen=True)
class Stats:
    """Repeated timings of one contender."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def minimum(self) -> float:
        return min(self.samples)

    def to_dict(self, unit: str = "ms") -> dict[str, Any]:
        return {
            "unit": unit,
            "median": round(self.median, 3),
            "min": round(self.minimum, 3),
            "samples": [round(sample, 3) for sample in self.samples],
        }


def alternate(contenders: dict[str, Callable[[], float]], rounds: int) -> dict[str, Stats]:
    """Run each contender once per round, in turn; each returns its own measured time."""
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            samples[name].append(run())
    return {name: Stats(tuple(values)) for name, values in samples.items()}


def bench_leads(tenant_id: str, count: int) -> list[dict[str, Any]]:
    """Varied demo leads, all due (no opt-outs or excluded stages), for a bench tenant."""
    leads = demo_leads(NOW, count, tenant_id)
    for lead in leads:
        lead["opted_out_at"] = None
        if lead["stage"] in ("customer", "lost"):
            lead["stage"] = "nurturing"
    return leads


@contextmanager
def scratch_database(admin_url: str) -> Iterator[str]:
    """A migrated database of the bench's own, dropped afterwards."""
    name = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = with_database(admin_url, name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            Runner(conn, default_migrations_dir()).apply()
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True, prepare_threshold=None)


# --- (a) decide + persist 10,000 leads, and the write path against one INSERT per row ---------


def _insert_each(
    conn: psycopg.Connection[Any], run_id: str, tenant_id: str, decisions: Any
) -> None:
    with conn.transaction(), conn.cursor() as cursor:
        for d in decisions:
            cursor.execute(
                "INSERT INTO dry_run_log (run_id, tenant_id, lead_id, channel, action, reason, "
                "dispatch_key, template, flag_enabled, not_before, details, decided_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    run_id,
                    tenant_id,
                    d.lead_id,
                    d.channel,
                    d.action,
                    d.reason,
                    d.dispatch_key,
                    d.template,
                    False,
                    d.not_before,
                    Jsonb(ledger.details_json(d)),
                    NOW,
                ),
            )


def bench_persist(url: str, leads_count: int, rounds: int) -> dict[str, Any]:
    tenant = "bench-persist"
    with _connect(url) as conn:
        seed_tenant(conn, tenant, bench_leads(tenant, leads_count), UNCAPPED)

        def reset() -> None:
            conn.execute("TRUNCATE dry_run_log")
            contacts.normalize_phone.cache_clear()
            contacts.normalize_email.cache_clear()

        decided: list[Any] = []

        def end_to_end() -> float:
            reset()
            started = time.perf_counter()
            result = run_dry_run(
                conn,
                tenant_id=tenant,
                batch_size=leads_count,
                run_id=f"e2e-{uuid.uuid4()}",
                now=NOW,
            )
            elapsed = (time.perf_counter() - started) * 1000
            decided[:] = result.decisions
            return elapsed

        end_to_end()  # warm-up, and the decisions the write contenders write
        decisions = list(decided)

        def write_copy() -> float:
            reset()
            started = time.perf_counter()
            with conn.transaction():
                ledger.record(
                    conn,
                    f"copy-{uuid.uuid4()}",
                    tenant,
                    decisions,
                    flag_enabled=False,
                    decided_at=NOW,
                )
            return (time.perf_counter() - started) * 1000

        def write_insert_each() -> float:
            reset()
            started = time.perf_counter()
            _insert_each(conn, f"ins-{uuid.uuid4()}", tenant, decisions)
            return (time.perf_counter() - started) * 1000

        # The end-to-end target is measured in rounds of its own: interleaved with the
        # one-INSERT-per-row contender, it would pay for that contender's write burst.
        stats = alternate({"end_to_end": end_to_end}, rounds)
        stats |= alternate(
            {"write_copy": write_copy, "write_insert_each": write_insert_each}, rounds
        )
    return {
        "leads": len(decisions),
        "end_to_end": stats["end_to_end"].to_dict(),
        "write_copy": stats["write_copy"].to_dict(),
        "write_insert_each": stats["write_insert_each"].to_dict(),
        "write_speedup_median": round(
            stats["write_insert_each"].median / stats["write_copy"].median, 1
        ),
        "target_end_to_end_ms": 600,
        "target_write_speedup": 10,
    }


# --- (b) SQL statements per invocation ------------------------------------------------------


class CountingCursor(psycopg.Cursor[Any]):
    """Counts the statements a connection sends (COPY counts as one)."""

    count = 0

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        CountingCursor.count += 1
        return super().execute(*args, **kwargs)

    def executemany(self, *args: Any, **kwargs: Any) -> Any:
        CountingCursor.count += 1
        return super().executemany(*args, **kwargs)

    def copy(self, *args: Any, **kwargs: Any) -> Any:
        CountingCursor.count += 1
        return super().copy(*args, **kwargs)


def bench_statements(url: str, sizes: Sequence[int]) -> dict[str, Any]:
    counts: dict[str, int] = {}
    with _connect(url) as conn:
        for size in sizes:
            tenant = f"bench-stmt-{size}"
            seed_tenant(conn, tenant, bench_leads(tenant, size), UNCAPPED)
            conn.cursor_factory = CountingCursor
            CountingCursor.count = 0
            result = run_dry_run(
                conn, tenant_id=tenant, batch_size=size, run_id=f"stmt-{size}", now=NOW
            )
            conn.cursor_factory = psycopg.Cursor
            assert len(result.decisions) == size
            # +2: the BEGIN and COMMIT psycopg sends for the explicit transaction.
            counts[str(size)] = CountingCursor.count + 2
    return {"by_batch_size": counts, "constant": len(set(counts.values())) == 1}


# --- (c) the decision alone, per lead -------------------------------------------------------


def _policy_leads(count: int) -> list[Lead]:
    return [
        Lead(
            id=str(raw["id"]),
            phone=raw["phone"],
            email=raw["email"],
            whatsapp_opt_in=raw["whatsapp_opt_in"],
            email_opt_in=raw["email_opt_in"],
            opted_out_at=None,
            timezone=raw["timezone"],
            stage=raw["stage"],
            last_inbound_at=raw["last_inbound_at"],
        )
        for raw in bench_leads("bench-decide", count)
    ]


def bench_decision(count: int, rounds: int) -> dict[str, Any]:
    leads = _policy_leads(count)
    tenant = Tenant(id="bench-decide", timezone="America/Sao_Paulo", cooldown_hours=72)
    phone_raw = contacts.normalize_phone.__wrapped__
    email_raw = contacts.normalize_email.__wrapped__

    def ours_cold() -> float:
        contacts.normalize_phone.cache_clear()
        contacts.normalize_email.cache_clear()
        started = time.perf_counter()
        decide_batch(leads, tenant, {}, NOW)
        return (time.perf_counter() - started) * 1e6 / count

    def ours_warm() -> float:
        started = time.perf_counter()
        decide_batch(leads, tenant, {}, NOW)
        return (time.perf_counter() - started) * 1e6 / count

    def eager_baseline() -> float:
        # What a naive policy pays: both contacts validated for every lead, no cache.
        started = time.perf_counter()
        for lead in leads:
            if lead.phone:
                phone_raw(lead.phone)
            if lead.email:
                email_raw(lead.email)
        decide_batch(leads, tenant, {}, NOW)
        return (time.perf_counter() - started) * 1e6 / count

    stats = alternate(
        {
            "ours_cold_cache": ours_cold,
            "ours_warm_cache": ours_warm,
            "eager_validation_baseline": eager_baseline,
        },
        rounds,
    )
    return {
        "leads": count,
        **{name: value.to_dict("us/lead") for name, value in stats.items()},
        "speedup_vs_eager_median": round(
            stats["eager_validation_baseline"].median / stats["ours_cold_cache"].median, 2
        ),
        "target_us_per_lead": 40,
    }


# --- (d) cold start -------------------------------------------------------------------------

_COLD_SCRIPT = """
import json, os, sys, time
started = time.perf_counter()
import dry_run.handler as handler
from devtools.lambda_context import LocalLambdaContext
imported = time.perf_counter()
response = handler.lambda_handler(
    {"tenantId": os.environ["BENCH_TENANT"], "batchSize": 50}, LocalLambdaContext())
done = time.perf_counter()
assert "error" not in response and len(response["decisions"]) == 50, response
print("BENCH " + json.dumps({"import_ms": (imported - started) * 1000,
                             "total_ms": (done - started) * 1000}), file=sys.stderr)
"""


def _spawn(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    completed = subprocess.run(
        args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=True
    )
    return (time.perf_counter() - started) * 1000, completed.stderr


def bench_cold_start(url: str, rounds: int) -> dict[str, Any]:
    tenant = "bench-cold"
    with _connect(url) as conn:
        seed_tenant(conn, tenant, bench_leads(tenant, 50 * (rounds + 1)), UNCAPPED)
    env = {**os.environ, "DATABASE_URL": url, "BENCH_TENANT": tenant}
    env.pop("MICRO_AGENT_DISPARO_ENABLED", None)
    inner: dict[str, list[float]] = {"import_ms": [], "in_process_ms": []}

    def cold() -> float:
        wall, stderr = _spawn([sys.executable, "-c", _COLD_SCRIPT], env)
        line = next(row for row in stderr.splitlines() if row.startswith("BENCH "))
        figures = json.loads(line.removeprefix("BENCH "))
        inner["import_ms"].append(figures["import_ms"])
        inner["in_process_ms"].append(figures["total_ms"])
        return wall

    def bare_interpreter() -> float:
        return _spawn([sys.executable, "-c", "pass"], env)[0]

    stats = alternate({"cold_start": cold, "bare_interpreter": bare_interpreter}, rounds)
    imports = Stats(tuple(inner["import_ms"]))
    return {
        "cold_start_wall": stats["cold_start"].to_dict(),
        "bare_interpreter_wall": stats["bare_interpreter"].to_dict(),
        "handler_imports": imports.to_dict(),
        "in_process_total": Stats(tuple(inner["in_process_ms"])).to_dict(),
        "import_share_median": round(imports.median / stats["cold_start"].median, 2),
        "target_ms": 800,
    }


# --- artifacts: size, build time, cold import with and without precompiled bytecode ---------

_IMPORT_SCRIPT = """
import sys, time
sys.path[:0] = sys.argv[1:3]
started = time.perf_counter()
import dry_run.handler
print((time.perf_counter() - started) * 1000)
"""


def bench_artifact(rounds: int) -> dict[str, Any]:
    from devtools.artifact import extract, local_target, runtime_dir  # noqa: PLC0415
    from devtools.package import SERVICES, package  # noqa: PLC0415

    python, arch = local_target()
    build_dir = REPO_ROOT / "build" / "bench-artifact"
    started = time.perf_counter()
    manifests = {
        name: package(service, arch=arch, python=python, build_dir=build_dir)
        for name, service in SERVICES.items()
    }
    build_s = time.perf_counter() - started
    compiled = extract(build_dir / "dry_run.zip", build_dir / "with-bytecode")
    source_only = extract(build_dir / "dry_run.zip", build_dir / "without-bytecode")
    for cache in list(source_only.rglob("__pycache__")):
        shutil.rmtree(cache)
    runtime = runtime_dir(build_dir)
    # Lambda's task root is read-only: without shipped bytecode every cold start compiles.
    # -B stands in for that (-I ignores PYTHONDONTWRITEBYTECODE, so the variable would not).
    env = {"PATH": os.environ.get("PATH", "")}

    def cold_import(root: Path) -> Callable[[], float]:
        def run() -> float:
            completed = subprocess.run(
                [sys.executable, "-I", "-S", "-B", "-c", _IMPORT_SCRIPT, str(root), str(runtime)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            return float(completed.stdout.strip())

        return run

    stats = alternate(
        {"with_bytecode": cold_import(compiled), "without_bytecode": cold_import(source_only)},
        rounds,
    )
    return {
        "python": python,
        "architecture": arch,
        "build_seconds_both": round(build_s, 1),
        "sizes": {
            name: {"zipped": m["size_zipped"], "unzipped": m["size_unzipped"]}
            for name, m in manifests.items()
        },
        "import_with_bytecode": stats["with_bytecode"].to_dict(),
        "import_without_bytecode": stats["without_bytecode"].to_dict(),
        "bytecode_speedup_median": round(
            stats["without_bytecode"].median / stats["with_bytecode"].median, 2
        ),
        "target_speedup": 1.5,
    }


def _render(report: dict[str, Any], console: Console) -> None:
    table = Table(title="nox -s bench (medians; min in brackets)")
    for column in ("benchmark", "result", "target", "ok"):
        table.add_column(column)

    def row(name: str, result: str, target: str, ok: bool) -> None:
        table.add_row(name, result, target, "yes" if ok else "NO")

    persist = report["persist"]
    e2e = persist["end_to_end"]
    row(
        f"(a) decide+persist {persist['leads']} leads",
        f"{e2e['median']:.0f} ms [{e2e['min']:.0f}]",
        "< 600 ms",
        e2e["median"] < 600,
    )
    row(
        "(a) write: COPY vs INSERT per row",
        f"{persist['write_copy']['median']:.0f} vs {persist['write_insert_each']['median']:.0f} ms "
        f"= {persist['write_speedup_median']}x",
        ">= 10x",
        persist["write_speedup_median"] >= 10,
    )
    statements = report["statements"]
    row(
        "(b) SQL statements per invocation",
        ", ".join(f"{size}: {count}" for size, count in statements["by_batch_size"].items()),
        "same count",
        statements["constant"],
    )
    decision = report["decision"]
    cold_cache = decision["ours_cold_cache"]
    row(
        "(c) decision per lead (cold caches)",
        f"{cold_cache['median']:.1f} us [{cold_cache['min']:.1f}]; eager baseline "
        f"{decision['eager_validation_baseline']['median']:.1f} us",
        "< 40 us",
        cold_cache["median"] < 40,
    )
    cold = report["cold_start"]
    row(
        "(d) cold start, 50 leads",
        f"{cold['cold_start_wall']['median']:.0f} ms [{cold['cold_start_wall']['min']:.0f}]; "
        f"imports {cold['import_share_median']:.0%}; bare python "
        f"{cold['bare_interpreter_wall']['median']:.0f} ms",
        "< 800 ms",
        cold["cold_start_wall"]["median"] < 800,
    )
    artifact = report.get("artifact")
    if artifact:
        dry_run_size = artifact["sizes"]["dry_run"]
        row(
            "artifacts: dry_run.zip size / build time",
            f"{dry_run_size['zipped'] / 2**20:.1f} MB zipped, "
            f"{dry_run_size['unzipped'] / 2**20:.1f} MB unzipped; both built in "
            f"{artifact['build_seconds_both']} s",
            "< 50 / 250 MB",
            dry_run_size["zipped"] < 50 * 2**20,
        )
        row(
            "artifacts: cold import, bytecode vs source",
            f"{artifact['import_with_bytecode']['median']:.0f} vs "
            f"{artifact['import_without_bytecode']['median']:.0f} ms = "
            f"{artifact['bytecode_speedup_median']}x",
            ">= 1.5x",
            artifact["bytecode_speedup_median"] >= 1.5,
        )
    console.print(table)


def main(argv: Sequence[str] | None = None) -> int:
    """Run every benchmark and write build/bench.json."""
    parser = argparse.ArgumentParser(prog="nox -s bench --", description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--leads", type=int, default=10_000)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--skip-artifact", action="store_true", help="skip the packaging bench")
    args = parser.parse_args(argv)
    admin_url = os.environ.get("DATABASE_URL", "").strip()
    if not admin_url:
        print("DATABASE_URL is not set: run this through `nox -s bench`.", file=sys.stderr)
        return 2
    console = Console(width=max(Console().width, 140))
    report: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
    }
    with scratch_database(admin_url) as url:
        console.print("(a) decide + persist ...")
        report["persist"] = bench_persist(url, args.leads, args.rounds)
        console.print("(b) statements ...")
        report["statements"] = bench_statements(url, [10, 100, 1000])
        console.print("(c) decision cost ...")
        report["decision"] = bench_decision(args.leads, args.rounds)
        console.print("(d) cold start ...")
        report["cold_start"] = bench_cold_start(url, args.rounds)
    if not args.skip_artifact:
        console.print("artifacts ...")
        report["artifact"] = bench_artifact(args.rounds)
    existing = json.loads(args.output.read_text()) if args.output.is_file() else {}
    existing["dry_run"] = report
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(existing, indent=2) + "\n", encoding="utf-8")
    _render(report, console)
    console.print(f"figures in {args.output.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
