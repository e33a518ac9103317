#!/usr/bin/env python3
"""The Nexmark queries of scripts/nexmark/flink/qN.sql on Apache Flink, through the Flink peer's bench.py.

bench.py (../shared/peers/flink/bench.py) knows its own benchmarks only; this registers one per query and state
backend (SQL from scripts/nexmark/flink/, a checkpoint every --interval-ms), and runs them with bench.py's own
orchestration: its cluster (1 JobManager, 1 TaskManager with 2 slots), its warm-up job, its wait for an idle
machine, a fresh client per run, and its discarding of runs that other processes disturbed. On top it measures
the CPU time of the TaskManager process over each run (utime + stime from /proc, as scripts/nexmark.sh does for
Sluice) to give rows per second per core used.

A run of E events is the bids among E Nexmark events (46 in 50) as datagen rows, their bidders uniform over as
many persons as E events create (E/50) and their auctions over as many auctions (3E/50): the SQL's ${BIDDER_MAX}
and ${AUCTION_MAX}, substituted here (bench.py substitutes ${ROWS}) into copies under $FLINKPEER/nexmark-sql/.
The shared source tables are in flink/tables/, pulled in by `-- include:` lines. q3 and q8 read persons and
auctions instead: ${PERSON_ROWS} and ${AUCTION_ROWS} (the 1 and 3 in 50 of E events), ids
up to ${PERSON_MAX} and ${AUCTION_MAX}; its rows are persons and auctions. q4 reads auctions and bids: its rows
are both.

Prints one line per query, backend and parallelism on stdout (bench.py's own output goes to stderr):
    nexmark-flink query=q0 backend=heap p=1 events=E rows=N secs=S rows_per_s=R tm_cpu_s=C rows_per_core=X
        ckpts=K ckpt_ms_mean=M runs=k foreign_cpu_max=F
the figures of the run with the median rows/s. `secs` is bench.py's processing time (first task RUNNING to
FINISHED, from the REST API); `rows` are datagen rows (bids; persons and auctions for q3 and q8; auctions and bids for q4).
"""

import argparse
import contextlib
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SQL_DIR = os.path.join(HERE, "flink")
STATEFUL = {"q3", "q4", "q5", "q7", "q8", "q11", "q12"}
# Queries over persons and auctions, and over auctions and bids (the others read bids).
PERSONS_AND_AUCTIONS = {"q3", "q8"}
AUCTIONS_AND_BIDS = {"q4"}


def render_includes(path):
    """The SQL file with each `-- include: FILE` line replaced by that file (relative to SQL_DIR): the tables
    the queries share are defined once, under flink/tables/."""
    out = []
    for line in open(path):
        if line.startswith("-- include: "):
            out.append(open(os.path.join(SQL_DIR, line[len("-- include: "):].strip())).read())
        else:
            out.append(line)
    return "".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer", required=True, help="the Flink peer's directory (holds bench.py)")
    ap.add_argument("--queries", default="q0,q1,q2,q3,q4,q5,q7,q8,q11,q12")
    ap.add_argument("--events", required=True,
                    help="Nexmark events per query and backend: q0:heap=N,q11:rocksdb=N,...")
    ap.add_argument("--p", default="1,2")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--interval-ms", type=int, default=1000)
    ap.add_argument("--idle-wait", type=int, default=300)
    ap.add_argument("--max-foreign", type=float, default=0.15)
    ap.add_argument("--retries", type=int, default=3)
    args = ap.parse_args()

    sys.path.insert(0, os.path.abspath(args.peer))
    import bench  # noqa: E402 (the peer's orchestrator, standard library only)

    events = {k: int(v) for k, v in (kv.split("=", 1) for kv in args.events.split(","))}
    rendered = os.path.join(bench.PEER, "nexmark-sql")
    os.makedirs(rendered, exist_ok=True)
    names = []
    for query in args.queries.split(","):
        source = os.path.join(SQL_DIR, query + ".sql")
        if not os.path.exists(source):
            raise SystemExit("no Flink SQL for %s (%s)" % (query, source))
        for backend in (("heap", "rocksdb") if query in STATEFUL else ("heap",)):
            n = events["%s:%s" % (query, backend)]
            # Events 0..n-1 of each kind: a person at 0 of every 50, auctions at 1-3, bids at 4-49.
            persons = n // 50 + (1 if n % 50 > 0 else 0)
            auctions = n // 50 * 3 + min(max(n % 50 - 1, 0), 3)
            bids = n // 50 * 46 + max(n % 50 - 4, 0)
            if query in PERSONS_AND_AUCTIONS:
                rows = persons + auctions
            elif query in AUCTIONS_AND_BIDS:
                rows = auctions + bids
            else:
                rows = bids
            sql = os.path.join(rendered, "%s_%s.sql" % (query, backend))
            text = render_includes(source)
            # bench.py puts `rows` for ${ROWS}, the bid table's row count: when the query reads auctions too,
            # the bids are fewer than its rows and are put in here.
            if query in AUCTIONS_AND_BIDS:
                text = text.replace("${ROWS}", str(bids))
            for name, value in (("${BIDDER_MAX}", 1000 + max(persons, 1) - 1),
                                ("${PERSON_MAX}", 1000 + max(persons, 1) - 1),
                                ("${AUCTION_MAX}", 1000 + max(auctions, 1) - 1),
                                ("${PERSON_ROWS}", persons), ("${AUCTION_ROWS}", auctions), ("${EVENTS}", n)):
                text = text.replace(name, str(value))
            with open(sql, "w") as fh:
                fh.write(text)
            conf = {
                "state.backend.type": "hashmap" if backend == "heap" else "rocksdb",
                "execution.checkpointing.interval": "%dms" % args.interval_ms,
                "execution.checkpointing.dir": "file://" + bench.CKPT_DIR,
                "execution.checkpointing.checkpoints-after-tasks-finish": "false",
            }
            if backend == "rocksdb":
                conf["execution.checkpointing.incremental"] = "true"
            name = "nexmark_%s_%s" % (query, backend)
            # render_script joins SQL_DIR with this path: an absolute path wins.
            bench.BENCHES[name] = dict(sql=sql, rows=rows, conf=conf, ckpt=True,
                                       doc="Nexmark %s, %s state" % (query, backend))
            names.append((name, query, backend, n))

    def taskmanager_pid():
        for f in os.listdir(bench.RUN_DIR):
            if "taskexecutor" in f and f.endswith(".pid"):
                for line in open(os.path.join(bench.RUN_DIR, f)):
                    if line.strip().isdigit() and os.path.exists("/proc/" + line.strip()):
                        return int(line.strip())
        raise SystemExit("no running Flink TaskManager in " + bench.RUN_DIR)

    # Every run's result, with the TaskManager's CPU seconds over the run added. The TaskManager is idle
    # while the client process starts and plans (a few seconds of heartbeats at most).
    results = []
    run_one = bench.run_one

    def measured_run_one(bench_name, p, n, rep, run_dir, explain=False):
        pid = taskmanager_pid()
        before = bench.proc_ticks([pid])
        result = run_one(bench_name, p, n, rep, run_dir, explain=explain)
        result["tm_cpu_secs"] = (bench.proc_ticks([pid]) - before) / bench.HZ
        results.append(result)
        return result

    bench.run_one = measured_run_one
    run_args = argparse.Namespace(
        bench=",".join(name for name, _, _, _ in names), p=args.p, reps=args.reps, scale=1.0, no_warmup=False,
        keep_cluster=False, max_foreign=args.max_foreign, retries=args.retries, idle_wait=args.idle_wait)
    with contextlib.redirect_stdout(sys.stderr):
        bench.main_run(run_args)

    for name, query, backend, n in names:
        for p in (int(x) for x in args.p.split(",")):
            runs = [r for r in results if r["bench"] == name and r["p"] == p and r.get("ok") and r["rep"] > 0]
            if not runs:
                print("nexmark-flink query=%s backend=%s p=%d FAILED" % (query, backend, p), flush=True)
                continue
            runs.sort(key=lambda r: r["rows"] / r["proc_secs"])
            r = runs[(len(runs) - 1) // 2]
            ck = r.get("checkpoints") or {}
            completed = ((ck.get("counts") or {}).get("completed")) or 0
            mean = (ck.get("summary_e2e") or {}).get("avg")
            print("nexmark-flink query=%s backend=%s p=%d events=%d rows=%d secs=%.2f rows_per_s=%d tm_cpu_s=%.2f "
                  "rows_per_core=%d ckpts=%d ckpt_ms_mean=%s runs=%d foreign_cpu_max=%.2f"
                  % (query, backend, p, n, r["rows"], r["proc_secs"], r["rows"] / r["proc_secs"], r["tm_cpu_secs"],
                     r["rows"] / r["tm_cpu_secs"] if r["tm_cpu_secs"] > 0 else 0, completed,
                     "%.0f" % mean if mean is not None else "-", len(runs),
                     max(x.get("foreign_cpu_cores", 0) for x in runs)), flush=True)


if __name__ == "__main__":
    started = time.time()
    main()
    print("# flink runs took %.0f s" % (time.time() - started), file=sys.stderr)
