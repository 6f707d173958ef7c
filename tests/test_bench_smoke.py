"""The benchmark still runs: a few-second profile of `python -m bench`, end to end.

Figures from a run this short mean nothing and are not asserted (machines are
noisy); what is checked is that every scenario ran against every target, every
answered call reached faregate's ledger, and the report was written.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_smoke_profile_produces_the_report(tmp_path):
    out, md = tmp_path / "results.json", tmp_path / "RESULTS.md"
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--no-litellm", "--no-portkey", "--no-info",
         "--out", str(out), "--markdown", str(md)],
        cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    results = json.loads(out.read_text())
    for scenario in ("chat_open_loop", "chat_saturation", "chat_sse", "responses_open_loop"):
        targets = results["scenarios"][scenario]
        assert {"direct", "bare", "faregate"} <= set(targets), scenario
        assert all(t["ok"] > 0 for t in targets.values()), scenario
    assert results["ledger_check"]["faregate"]["all_recorded"] is True
    assert results["ledger"]["rows"] == 2_000
    assert results["pg_ledger"]["postgresql"]["records"] == 2_000, results["pg_ledger"]
    assert len(results["pg_ledger"]["postgresql_down"]["rss_mib"]) == 5
    assert results["realtime"]["idle"][-1]["sessions"] == 20, results["realtime"]
    assert results["realtime"]["frames"]["faregate"]["round_trips"] > 0
    assert results["admission"]["this_us"] > 0, results["admission"]
    streams = results["streams"]
    assert all(t["chunks_per_s"] for t in streams["targets"].values()), streams
    assert streams["ledger_check"]["all_recorded"] is True, streams["ledger_check"]
    load = results["realtime_load"]
    assert {"direct", "bare", "faregate"} == set(load["targets"]), load
    assert all(t["frames_per_s"] and not t["errors"] for t in load["targets"].values()), load
    assert all(t["up_ms"]["n"] and t["down_ms"]["n"] for t in load["targets"].values()), load
    assert load["ledger_check"]["all_recorded"] is True, load["ledger_check"]
    report = md.read_text()
    assert "| target (issue #8) | measured | verdict |" in report
    assert "Realtime at load, 3 sessions: per-frame p99" in report
    assert "busy streams: chunk capacity" in report
    assert report.count("\n| ") >= 18 and "== issue #8 targets ==" in report
    assert "python -m bench --smoke" in report


def test_bench_steps_times_every_metering_step(tmp_path):
    out = tmp_path / "steps.json"
    run = subprocess.run([sys.executable, "-m", "bench.steps", "--calls", "20", "--json", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert {"price()", "reservation cost", "find usage in the body", "ledger record",
            "journal write", "metrics"} <= set(figures)
    assert all(v > 0 for v in figures.values())
    assert "total" in run.stdout


def test_bench_volume_runs_end_to_end(tmp_path):
    """The issue #21 bench on tiny ledgers: every step runs and the section is written."""
    out, md = tmp_path / "volume.json", tmp_path / "RESULTS.md"
    md.write_text("# results\n\n## another section\nkept\n")
    # Its PostgreSQL keeps its data under the work directory and runs as another
    # user under root, so the directory must be reachable (pytest's are 0700).
    work = Path(tempfile.mkdtemp(prefix="faregate-volume-smoke-"))
    work.chmod(0o755)
    try:
        run = subprocess.run(
            [sys.executable, "-m", "bench.volume", "--smoke", "--work", str(work),
             "--out", str(out), "--markdown", str(md)],
            cwd=ROOT, capture_output=True, text=True, timeout=600)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    results = json.loads(out.read_text())
    for backend in ("sqlite", "postgresql"):
        got = results["backends"][backend]
        assert got["rows"] == 5_000 and got["disk"]["rollup_rows"] > 0
        assert got["lag"]["dashboard"]["refreshes"] == 10
        # 2,000 charges, 100 of them one session's responses: 1,900 calls + 1 session.
        assert results["upgrade"][backend]["rolled_up"] == 1_901
        assert results["projection"][backend]["rates"]["1000"]["charges_per_month"] > 0
    report = md.read_text()
    assert "## another section\nkept" in report
    assert report.count("## The ledger at volume (issue #21)") == 1
