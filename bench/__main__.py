"""``python -m bench``: run the benchmark parts against real processes and print their figures.

Parts: (a) students/s vs a bare Dramatiq actor, with (d) worker memory sampled during (a);
(b) wall time vs the latency bound; (c) POST latency and fan-out rate; (e) POST /api/bookings latency
at a steady rate vs GET /healthz; (f) invoice emails/s by the mailer vs one smtplib connection; (g) the booking expiry
sweep vs the old one-transaction-per-booking loop, and the sweep's query plan; (h) retry-all of failed jobs
vs retrying them one at a time; (i) payment notifications (each asks the gateway's status API) vs GET /healthz,
and reconciling pending bookings vs the gateway's rate limit; (j) the sync rate with no UPSTREAM_RATE_LIMIT vs one
far above it and one at twice it; (k) how soon a pause of sync-pembayaran holds, and a resume takes effect, across
4 sync-worker processes; (l) quorum queues vs classic ones, end to end, fan-out and bare Dramatiq; (m) one scrape
of sync-api's /metrics with 100,000 payments vs GET /healthz; (n) bookings at 100/s from four clients with the
whole `make run` stack running and every invoice sent, vs GET /healthz under the same load; (o) the scaling
curve: sync and booking rates, and memory per process, at 1, 2 and 4 processes, plotted. The figures go
to stdout
as a table and to bench/results/latest.json; process logs to bench/results/logs/<time>/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import time
import traceback

from . import (
    booking_stack,
    bookings_latency,
    common,
    email_rate,
    expiry_sweep,
    fanout,
    latency_bound,
    pause_reaction,
    payments,
    queue_types,
    rate_limit,
    retry_all,
    scaling,
    scrape_cost,
    sync_throughput,
)

PARTS = ("a", "b", "c", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o")
#: Defaults of the full suite, and of ``--small`` (a quick check that everything works).
#: (a) runs both sides at make run's sync-worker concurrency, 1 process x 16 threads (issue 18), antrian on the
#: default queue type (quorum), the bare actor on Dramatiq's classic queue.
#: (f) runs the mailer with 4 threads per process: against the instant local sink it is CPU-bound, and
#: 2, 4, 8 and 16 threads gave 245, 249-261, 227-251 and 224 emails/s (4 holds half the transactions open).
#: (j) runs each way (no limit, far above, twice the unlimited rate) j_repeats times, in turns.
#: (g) times the per-booking loop on all bookings if its first g_loop_subset say it ends within g_loop_budget_s,
#: else extrapolates from them.
FULL = {"a_students": 10_000, "a_processes": 1, "a_threads": 16,
        "b_students": 6_102, "b_processes": 2, "b_threads": 32, "b_latency_ms": 400.0,
        "c_students": 100_000, "c_samples": 9, "c_publish": 100_000,
        "e_rate": 200, "e_seconds": 30, "e_concurrency": 20,
        "f_emails": 5_000, "f_processes": 2, "f_threads": 4,
        "g_bookings": 100_000, "g_tours": 100, "g_repeats": 3, "g_loop_subset": 10_000, "g_loop_budget_s": 240,
        "g_plan_bookings": 1_000_000, "g_plan_due": 100, "h_jobs": 20_000,
        "i_notifications": 2_000, "i_concurrency": 8, "i_bookings": 10_000, "i_rate_limit": 500,
        "j_students": 20_000, "j_processes": 2, "j_threads": 8, "j_repeats": 3, "j_far_limit": 100_000.0,
        "k_students": 40_000, "k_processes": 4, "k_threads": 4, "k_cycles": 5,
        "l_students": 20_000, "l_processes": 2, "l_threads": 8,
        "m_payments": 100_000, "m_run_items": 50_000, "m_scrapes": 200,
        **booking_stack.FULL, **scaling.FULL}
SMALL = {**FULL, "a_students": 2_000, "b_students": 610, "c_students": 10_000, "c_samples": 5, "c_publish": 10_000,
         "e_seconds": 5, "f_emails": 500, "g_bookings": 10_000, "g_repeats": 1, "g_plan_bookings": 100_000,
         "h_jobs": 2_000, "i_notifications": 200, "i_bookings": 1_000, "j_students": 4_000,
         "k_students": 10_000, "k_cycles": 2, "l_students": 3_000,
         "m_scrapes": 50, **booking_stack.SMALL, **scaling.SMALL}


class BenchTimeout(BaseException):
    """Raised by the alarm when the whole suite overruns ``--max-seconds``: stops every part."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", type=lambda v: [p.strip() for p in v.split(",") if p.strip()], default=list(PARTS),
                        help="parts to run, e.g. 'a' or 'e,f' (d is measured during a)")
    parser.add_argument("--small", action="store_true", help="small sizes: a quick check, not figures to quote")
    parser.add_argument("--max-seconds", type=int, default=2700, help="stop everything after this long")
    for name, value in FULL.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=None,
                            help=f"default {value:g}" if isinstance(value, float) else f"default {value}")
    args = parser.parse_args(argv)
    unknown = [p for p in args.only if p not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    preset = SMALL if args.small else FULL
    for name, value in preset.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    common.set_log_dir(common.RESULTS_DIR / "logs" / stamp)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGALRM, lambda *_: _raise(BenchTimeout(f"the suite ran over {args.max_seconds}s")))
    signal.alarm(args.max_seconds)
    results = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
        "host": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "sizes": {name: getattr(args, name) for name in FULL},
        "logs": str(common.RESULTS_DIR / "logs" / stamp),
        "parts": {},
    }
    failed = False
    try:
        common.log("resetting database antrian_bench and vhost antrian_bench")
        common.reset_database()
        common.reset_vhost()
        engine = common.make_engine()
        for part in PARTS:
            if part not in args.only:
                continue
            started = time.perf_counter()
            try:
                results["parts"][part] = _run_part(part, engine, args)
            except Exception as exc:  # noqa: BLE001 - report it and go on with the next part
                failed = True
                traceback.print_exc()
                results["parts"][part] = {"error": f"{type(exc).__name__}: {exc}"}
            finally:
                common.stop_all()
            results["parts"].setdefault(part, {})["elapsed_s"] = round(time.perf_counter() - started, 1)
        engine.dispose()
    except (BenchTimeout, KeyboardInterrupt, SystemExit) as exc:
        failed = True
        results["error"] = str(exc) if isinstance(exc, BenchTimeout) else f"interrupted ({type(exc).__name__})"
        common.log(results["error"])
    finally:
        signal.alarm(0)
        common.stop_all()
        results["table"] = table_rows(results["parts"])
        _write(results)
    print_table(results)
    return 1 if failed else 0


def _raise(exc: BaseException):
    raise exc


def _run_part(part: str, engine, args: argparse.Namespace) -> dict:
    if part == "a":
        return sync_throughput.run(engine, students=args.a_students, processes=args.a_processes,
                                   threads=args.a_threads)
    if part == "b":
        return latency_bound.run(engine, students=args.b_students, processes=args.b_processes,
                                 threads=args.b_threads, latency_ms=args.b_latency_ms)
    if part == "c":
        return fanout.run(engine, students=args.c_students, samples=args.c_samples, publish=args.c_publish)
    if part == "e":
        return bookings_latency.run(engine, rate=args.e_rate, seconds=args.e_seconds, concurrency=args.e_concurrency)
    if part == "f":
        return email_rate.run(engine, emails=args.f_emails, processes=args.f_processes, threads=args.f_threads)
    if part == "h":
        return retry_all.run(engine, jobs=args.h_jobs)
    if part == "i":
        return payments.run(engine, notifications=args.i_notifications, concurrency=args.i_concurrency,
                            bookings=args.i_bookings, rate_limit=args.i_rate_limit)
    if part == "n":
        return booking_stack.run(engine, args)
    if part == "o":
        return scaling.run(engine, args)
    if part == "m":
        return scrape_cost.run(engine, payments=args.m_payments, run_items=args.m_run_items, scrapes=args.m_scrapes)
    if part == "l":
        return queue_types.run(engine, students=args.l_students, processes=args.l_processes, threads=args.l_threads)
    if part == "k":
        return pause_reaction.run(engine, students=args.k_students, processes=args.k_processes,
                                  threads=args.k_threads, cycles=args.k_cycles)
    if part == "j":
        return rate_limit.run(engine, students=args.j_students, processes=args.j_processes, threads=args.j_threads,
                              repeats=args.j_repeats, far_limit=args.j_far_limit)
    return expiry_sweep.run(engine, bookings=args.g_bookings, tours=args.g_tours, repeats=args.g_repeats,
                            loop_subset=args.g_loop_subset, loop_budget_s=args.g_loop_budget_s,
                            plan_bookings=args.g_plan_bookings, plan_due=args.g_plan_due)


def table_rows(parts: dict) -> list[dict]:
    """The figures as rows: part, what, value, target, and whether the target is met (None: no target)."""
    rows: list[dict] = []

    def add(part, what, value, target="", ok=None):
        rows.append({"part": part, "figure": what, "value": value, "target": target, "ok": ok})

    for part, result in parts.items():
        if "error" in result:
            add(part, "FAILED", result["error"][:200])
    a = parts.get("a", {})
    if "antrian" in a:
        an, bare = a["antrian"], a["bare"]
        setup = f"{a['students']} students, {a['processes']}x{a['threads']}"
        add("a", f"antrian end to end, POST->finished incl. fan-out ({setup})",
            f"{an['rate_per_s']:.0f}/s ({an['wall_s']}s)")
        add("a", "antrian processing window, 1st->last stored (fan-out overlaps)",
            f"{an['window_rate_per_s']:.0f}/s ({an['window_s']}s)")
        if an["fanout"]:
            add("a", "  its fan-out (own log line, workers competing)",
                f"{an['fanout']['rate_per_s']}/s ({an['fanout']['seconds']}s)")
        up = a["upstream_latency"]
        add("a", "  one upstream GET: kept-alive session / new connection",
            f"{up['keep_alive_ms']} / {up['new_connection_ms']} ms")
        add("a", "bare Dramatiq, 1st->last stored, enqueue excluded",
            f"{bare['rate_per_s']:.0f}/s ({bare['window_s']}s)")
        add("a", "ratio antrian end to end / bare", f"{a['ratio_end_to_end']:.2f}", ">= 0.90",
            a["ratio_end_to_end"] >= 0.90)
        add("a", "ratio antrian processing window / bare", f"{a['ratio_processing_window']:.2f}", "(info)")
        add("a", "  machine CPU busy during antrian / bare (steal; loadavg before)",
            f"{common.machine(an)} / {common.machine(bare)}")
        for name, result in (("antrian", an), ("bare", bare)):
            add("a", f"  CPU ms per student by process, {name}", common.per_unit(result["cpu_seconds"], a["students"]))
            add("a", f"  mean busy DB sessions, {name}", common.sessions(result["db_sessions"]))
        for row in an["memory"]:
            add("d", f"sync-worker {row['role']} (pid {row['pid']}) peak RSS / VmHWM",
                f"{row['max_rss_mb']:.0f} / {row['hwm_mb']:.0f} MB", "< 150 MB", row["hwm_mb"] < 150)
        for row in bare["memory"]:
            add("d", f"bare dramatiq {row['role']} (pid {row['pid']}) peak RSS / VmHWM",
                f"{row['max_rss_mb']:.0f} / {row['hwm_mb']:.0f} MB", "(info)")
    b = parts.get("b", {})
    if "ratio" in b:
        add("b", f"{b['students']} students, {b['latency_ms']:g} ms upstream, C={b['processes']}x{b['threads']}:"
                 " wall vs bound", f"{b['wall_s']}s vs {b['bound_s']}s")
        add("b", "ratio wall / bound", f"{b['ratio']:.3f}", "<= 1.10", b["ratio"] <= 1.10)
        up = b["upstream_latency"]
        add("b", "  one upstream GET measured (kept-alive / new connection); bound with it",
            f"{up['keep_alive_ms']} / {up['new_connection_ms']} ms; {b['measured_bound_s']}s")
        add("b", "  mean busy DB sessions", common.sessions(b["db_sessions"]))
        add("b", "  machine CPU busy (steal; loadavg before)", common.machine(b))
        add("b", "  CPU ms per student by process", common.per_unit(b["cpu_seconds"], b["students"]))
    c = parts.get("c", {})
    if "post" in c:
        post = c["post"]
        add("c", f"POST /api/sync-runs, {c['students']} students, median of {len(post['samples_ms'])}",
            f"{post['median_ms']:.1f} ms", "< 100 ms", post["median_ms"] < 100)
        add("c", "  slowest / first sample; snapshot query alone",
            f"{post['max_ms']:.1f} / {post['first_ms']:.1f} ms; {c['snapshot_query_ms']} ms")
        fo = c["fanout"]
        add("c", "fan-out confirmed messages/s (own log line, worker 1x1)",
            f"{fo['rate_per_s']}/s ({fo['messages']} in {fo['seconds']}s)", ">= 10000/s", fo["rate_per_s"] >= 10_000)
        add("c", "  POST -> fanout_done observed", f"{fo['post_to_fanout_done_rate_per_s']:.0f}/s"
            f" ({fo['post_to_fanout_done_s']}s)")
        add("c", "  CPU ms per 1,000 messages by process; machine busy",
            common.per_unit(fo["cpu_seconds"], fo["messages"] / 1000) + f"; {fo['machine_cpu_busy_percent']}%")
        raw = c["raw_publisher"]
        add("c", f"raw ConfirmedPublisher, {raw['messages']} messages to a scratch queue",
            f"{raw['rate_per_s']:.0f}/s ({raw['seconds']}s)", "(reference)")
        add("c", "  CPU ms per 1,000 messages by process; machine busy",
            common.per_unit(raw["cpu_seconds"], raw["messages"] / 1000) + f"; {raw['machine_cpu_busy_percent']}%")
    _booking_rows(parts.get("e", {}), add)
    _email_rows(parts.get("f", {}), add)
    _expiry_rows(parts.get("g", {}), add)
    h = parts.get("h", {})
    if "ratio" in h:
        add("h", f"retry-all of {h['jobs']:,} failed jobs: confirmed batches of 500",
            f"{h['batched']['seconds']}s ({h['batched']['per_s']:,}/s)")
        add("h", "  one at a time: row lock, Dramatiq's enqueue (one confirm), delete, commit",
            f"{h['one_at_a_time']['seconds']}s ({h['one_at_a_time']['per_s']:,}/s)")
        add("h", "ratio one at a time / batched; every job queued once, none left stored", f"{h['ratio']}x", "(info)")
    _payment_rows(parts.get("i", {}), add)
    rate_limit.rows(parts.get("j", {}), add)
    pause_reaction.rows(parts.get("k", {}), add)
    queue_types.rows(parts.get("l", {}), add)
    scrape_cost.rows(parts.get("m", {}), add)
    booking_stack.rows(parts.get("n", {}), add)
    scaling.rows(parts.get("o", {}), add)
    return rows


def _booking_rows(e: dict, add) -> None:
    if "bookings" not in e:
        return
    setup = f"{e['rate']}/s for {e['seconds']}s, {e['concurrency']} connections"
    post, health = e["bookings"]["smooth"], e["healthz"]["smooth"]
    add("e", f"POST /api/bookings, {setup}, smooth: p50 / p90 / p99 / max", common.latencies(post))
    add("e", "  POST /api/bookings p50", f"{post['p50_ms']} ms", "< 10 ms", post["p50_ms"] < 10)
    add("e", "  POST /api/bookings p99", f"{post['p99_ms']} ms", "< 50 ms", post["p99_ms"] < 50)
    add("e", "  rate achieved; answered of ticks; answers by status", _answers(post), "all 201",
        post["non_201"] == 0 and post["bookings_made"] == post["status_codes"].get("201"))
    add("e", "GET /healthz, same load: p50 / p90 / p99 / max", common.latencies(health))
    add("e", "  ratio POST / healthz, p50 and p99", f"{post['ratio_p50']:.1f}x / {post['ratio_p99']:.1f}x", "(info)")
    add("e", "  outbox rows during the load: max / mean (relay keeping up)",
        f"{post['outbox_max_during_load']} / {post['outbox_mean_during_load']}", "(info)")
    add("e", "  outbox empty after the load ended", f"{post['outbox_empty_after_s']} s", "< 5 s",
        post["outbox_empty_after_s"] < 5)
    add("e", "  CPU ms per POST by process; machine busy (steal; loadavg before)",
        common.per_unit(post["cpu_seconds"], max(post["answered"], 1)) + f"; {common.machine(post)}")
    add("e", "  mean busy DB sessions during the load", common.sessions(post["db_sessions"]))
    post, health = e["bookings"]["bursts"], e["healthz"]["bursts"]
    add("e", f"POST /api/bookings, one hey -c {e['concurrency']}: bursts of {e['concurrency']} at once, p50/90/99/max",
        common.latencies(post), "(info)")
    add("e", "  rate achieved; answered of ticks; answers by status", _answers(post), "all 201",
        post["non_201"] == 0 and post["bookings_made"] == post["status_codes"].get("201"))
    add("e", "  GET /healthz in the same bursts: p50 / p90 / p99 / max", common.latencies(health), "(info)")
    add("e", "  mean busy DB sessions during the load", common.sessions(post["db_sessions"]))
    inv = e["invoices"]
    add("e", "emails queue after both: invoices / distinct bookings / bookings made",
        f"{inv['invoices']} / {inv['distinct_bookings']} / {inv['bookings']}", "all equal", inv["ok"])


def _payment_rows(i: dict, add) -> None:
    if "notifications" not in i:
        return
    n = i["notifications"]
    post, health = n["notifications"], n["healthz"]
    add("i", f"{n['count']:,} notifications, {n['concurrency']} at a time, gateway {n['gateway_latency_ms']:g} ms:"
             " p50 / p90 / p99 / max", common.latencies(post))
    add("i", "GET /healthz, same sync-api, client and concurrency: p50 / p90 / p99 / max", common.latencies(health))
    new, kept = n["gateway_direct_new_connection"], n["gateway_direct_kept_alive"]
    add("i", "  the gateway's status request asked directly, new connection / kept alive: p50 / p99",
        f"{new['p50_ms']} / {new['p99_ms']} ms; {kept['p50_ms']} / {kept['p99_ms']} ms", "(floor)")
    add("i", f"our own cost: notification p50 - {n['gateway_latency_ms']:g} ms, as a multiple of /healthz p50",
        f"{n['own_p50_ms']} ms = {n['own_p50_over_healthz_p50']}x", "(info)")
    add("i", "  ratio notification / healthz, p50 and p99", f"{n['ratio_p50']}x / {n['ratio_p99']}x", "(info)")
    checks = n["checks"]
    add("i", "  all 200 paid; bookings paid / one payment row each / e-tickets queued; status requests",
        f"{common.codes(post)}; {checks['paid']} / {checks['one_payment_each']} / {checks['etickets_queued']};"
        f" {n['gateway_status_requests']}", "all equal", True)
    add("i", "  CPU ms per notification by process; machine busy (steal; loadavg before)",
        common.per_unit(post["cpu_seconds"], max(post["requests"], 1)) + f"; {common.machine(post)}")
    r = i["reconcile"]
    add("i", f"reconcile() of {r['bookings']:,} pending bookings, gateway {r['gateway_latency_ms']:g} ms limited to"
             f" {r['rate_limit_per_s']}/s, {r['concurrency']} in flight, paced at {r['pace_per_s']:g}/s",
        f"{r['seconds']} s ({r['per_s']}/s)", f"< {r['target_s']:g} s", r["seconds"] < r["target_s"])
    add("i", "  the gateway limit's bound (bookings / limit); wall / bound; reconcile's own pace bound",
        f"{r['floor_s']} s; {r['ratio']}x; {r['pace_bound_s']} s", "(floor)")
    add("i", "  status requests / 429s the gateway sent", f"{r['status_requests']} / {r['rate_limited']}", "(info)")
    checks = r["checks"]
    add("i", "  bookings paid / one payment row each / one e-ticket outbox row each",
        f"{checks['paid']} / {checks['one_payment_each']} / {checks['eticket_outbox_rows']}", "all equal", True)
    add("i", "  CPU ms per booking by process; machine busy (steal; loadavg before)",
        common.per_unit(r["cpu_seconds"], r["bookings"]) + f"; {common.machine(r)}")
    add("i", "  mean busy DB sessions", common.sessions(r["db_sessions"]))
    pooled = r["pool_of_concurrency"]
    add("i", f"  the same, data regenerated, engine pool {pooled['pool_size']} (one connection per thread);"
             " wall / bound; 429s", f"{pooled['seconds']} s ({pooled['per_s']}/s); {pooled['ratio']}x;"
        f" {pooled['rate_limited']}", "(info)")
    add("i", "    CPU ms per booking by process; machine busy; sessions ended",
        common.per_unit(pooled["cpu_seconds"], r["bookings"]) + f"; {common.machine(pooled)};"
        f" {pooled['db_sessions']['sessions_ended']}", "(info)")


def _answers(result: dict) -> str:
    codes = ", ".join(f"{code}: {n}" for code, n in result["status_codes"].items())
    return f"{result['rate_per_s']}/s; {result['answered']} of {result['ticks']}; {codes}"


def _email_rows(f: dict, add) -> None:
    if "mailer" not in f:
        return
    mailer, floor = f["mailer"], f["floor"]
    add("f", f"mailer {f['processes']}x{f['threads']}, {f['emails']} invoices to a local SMTP sink, 1st->last",
        f"{mailer['rate_per_s']:.0f}/s ({mailer['window_s']}s)", ">= 200/s", mailer["rate_per_s"] >= 200)
    add("f", "one smtplib connection, same rendered invoices, no queue or DB",
        f"{floor['rate_per_s']:.0f}/s ({floor['window_s']}s)", "(floor)")
    add("f", "ratio mailer / floor", f"{f['ratio']:.2f}", ">= 0.8", f["ratio"] >= 0.8)
    add("f", "  rendering one invoice (text + HTML), message size",
        f"{floor['render_ms']} ms, {floor['message_bytes']} bytes", "(info)")
    checks = mailer["checks"]
    add("f", "  sink count / distinct Message-IDs / deliveries sent / left in queues",
        f"{checks['sink_count']} / {checks['distinct_message_ids']} / {checks['deliveries'].get('invoice sent', 0)}"
        f" / {sum(checks['left_in_queues'].values())}", f"{f['emails']} each, 0 left", checks["ok"])
    add("f", "  CPU ms per email by process; machine busy (steal; loadavg before)",
        common.per_unit(mailer["cpu_seconds"], max(mailer["emails_during_cpu_meter"], 1))
        + f"; {common.machine(mailer)}")
    add("f", "  mean busy DB sessions", common.sessions(mailer["db_sessions"]))


def _expiry_rows(g: dict, add) -> None:
    if "sweep" not in g:
        return
    sweep, loop, plan = g["sweep"], g["loop"], g["plan"]
    add("g", f"sweep(engine) of {g['bookings']:,} due bookings over {g['tours']} tours, batch"
             f" {g['default_batch_size']:,}, median of {len(sweep['runs'])}",
        f"{sweep['median_s']} s ({sweep['bookings_per_s']:,}/s)", "< 5 s", sweep["median_s"] < 5)
    add("g", "old per-booking loop: 1 transaction, 6 round trips a booking",
        f"{loop['seconds']} s ({loop['per_booking_ms']} ms each)", "(baseline)")
    add("g", f"  {loop['how']}", "")
    add("g", "ratio loop / sweep", f"{g['ratio']}x", ">= 50x", g["ratio"] >= 50)
    add("g", "end states: all due expired, tour quotas back to start, others untouched; sweep = loop",
        f"{'ok' if g['end_states_ok'] else 'WRONG'}; "
        + ("same digest" if g["same_end_state"] else "loop partial: not compared" if not loop["complete"]
           else "DIFFERENT"),
        "all ok", g["end_states_ok"] and (g["same_end_state"] or not loop["complete"]))
    for size, result in g["batch_sizes"].items():
        probe = result.get("probe", {})
        add("g", f"  batch {int(size):,}: median (min-max), batches, per batch; a tour update waited at most",
            f"{result['median_s']} s ({result['min_s']}-{result['max_s']}), {result['batches']},"
            f" {result['ms_per_batch']} ms; {probe.get('max_ms')} ms", "(info)")
    for size, result in g["batch_sizes"].items():
        add("g", f"  batch {int(size):,}, first batch's plan on this table: the UPDATE reaches its rows by",
            f"{result['plan']['update_join']}: {result['plan']['total_ms']} ms", "(info)")
    cpu = [run["machine"] for result in g["batch_sizes"].values() for run in result["runs"]]
    add("g", "  machine during the timed sweeps: CPU busy; CPU s of others (outside the bench and postgres)",
        f"{min(c['machine_cpu_busy_percent'] for c in cpu)}-{max(c['machine_cpu_busy_percent'] for c in cpu)}%;"
        f" {round(sum(c['cpu_seconds'].get('other', 0) for c in cpu), 1)} s in {len(cpu)} sweeps", "(info)")
    quiet = g["sweep_without_log_lines"]
    add("g", f"  batch {g['default_batch_size']:,} without its {g['bookings']:,} JSON log lines",
        f"{quiet['seconds']} s", "(info)")
    add("g", f"plan, {plan['bookings']:,} bookings of which {plan['mix']['DUE']} due: index scan on"
             " bookings_pending_expires_at", plan["index_scan"] + ("" if plan["index_scan"] == "yes"
                                                                   else f" ({plan['scan']})"),
        "yes", plan["index_scan"] == "yes")
    add("g", "  planning + execution, EXPLAIN (ANALYZE, BUFFERS); repeated",
        f"{plan['planning_ms']} + {plan['execution_ms']} ms; {' / '.join(map(str, plan['repeated_total_ms']))} ms",
        "< 10 ms", plan["total_ms"] < 10)
    for size, result in plan["batch_sizes"].items():
        add("g", f"  LIMIT {int(size):,}: the UPDATE reaches its rows by", f"{result['update_join']}:"
            f" {result['total_ms']} ms", "(info)")
    add("g", f"  sweep(engine) on that data ({plan['sweep']['expired']} expired)", f"{plan['sweep']['seconds']} s",
        "(info)", plan["sweep"]["end_state"]["ok"] and plan["data_unchanged_after_explain"])


def print_table(results: dict) -> None:
    rows = results["table"]
    print()
    print(f"antrian benchmarks - {results['started_at']} - {results['host']['cpus']} CPUs - {results['command']}")
    if not rows:
        print("no figures")
    width = max([len(r["figure"]) for r in rows] + [10])
    value_width = max([len(str(r["value"])) for r in rows if r["target"]] + [5])
    for row in rows:
        ok = {True: "ok", False: "MISSED", None: ""}[row["ok"]]
        line = f"({row['part']}) {row['figure']:<{width}}  {str(row['value']):<{value_width}}  {row['target']:<10} {ok}"
        print(line.rstrip())
    parts = results["parts"]
    if "a" in parts:
        print("(a) antrian is timed as a user gets it: from POST until 'finished', its fan-out included.")
        print("(a) bare is timed without enqueueing: all messages were enqueued first, then workers started;")
        print("    its rate spans its first to its last stored student (database timestamps).")
    if "e" in parts:
        print("(e) smooth: 20 hey processes of one connection each, started 5 ms apart; bursts: one hey -c 20 -q 10,")
        print("    whose connections tick together. hey skips a connection's ticks while it waits for an answer:")
        print("    a slow spell or an unanswered request shows as fewer answered requests than ticks.")
    if "f" in parts:
        print("(f) both rates span the first to the last email the sink received; 'other' CPU is outside the bench.")
    if "g" in parts:
        print("(g) sweep() is called in-process (its actor only wraps it in Dramatiq), on the worker's engine, writing")
        print("    its JSON log lines to a file; the data is regenerated before every run. A tour update's wait is")
        print("    timed by a probe process while a sweep runs: a booking's wait for the tours' row locks.")
    if "i" in parts:
        print("(i) a closed loop: each client thread of the bench sends its next request when its last was answered;")
        print("    reconcile() runs in the bench process on the booking-expiry worker's engine; the gateway apart.")
    if "error" in results:
        print(f"ABORTED: {results['error']}")
    print(f"figures: {common.RESULTS_DIR / 'latest.json'}   logs: {results['logs']}")


def _write(results: dict) -> None:
    common.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = common.RESULTS_DIR / "latest.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    sys.exit(main())
