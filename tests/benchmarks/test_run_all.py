"""``benchmarks/run_all.py`` on a fake benchmarks folder (tiny scripts written here): the table
has their figures (from ``--json`` and from what they print), a failing script is marked
failed, one past the timeout is killed and marked, a skipped one says why, the JSON is valid,
``--only`` keeps the other entries and the exit status says whether any failed."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import run_all  # noqa: E402  (benchmarks/run_all.py)
from run_all import Script  # noqa: E402

SCRIPTS = {
    "good": """
        import argparse, json, pathlib
        parser = argparse.ArgumentParser()
        parser.add_argument("--json", type=pathlib.Path)
        parser.add_argument("--size", type=int, default=100)
        args = parser.parse_args()
        print("benchmark machine: a test")
        print("| route | images/s |\\n|---|---|")
        print(f"| pure | {args.size * 1.5} |")
        print(f"total: {args.size} images in 2.5 s")
        if args.json:
            args.json.write_text(json.dumps({"figures": {"images": args.size}}))
    """,
    "bad": """
        import sys
        print("| a | b |\\n|---|---|\\n| 1 | 2 |")
        sys.exit(3)
    """,
    "slow": """
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        time.sleep(60)
    """,
}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    bench = tmp_path / "bench"
    bench.mkdir()
    for name, code in SCRIPTS.items():
        (bench / f"{name}.py").write_text(textwrap.dedent(code))
    return bench


FAKE = (
    Script("good", args=("--size", "100"), quick=("--size", "4"), writes_json=True),
    Script("bad"),
    Script("slow"),
    Script("never", skip_quick="no small size: too slow"),
)


def test_the_table_has_every_script_and_its_figures(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    document = run_all.run_all(FAKE, folder, out, True, tmp_path / "home", timeout=3.0)
    saved = json.loads((out / "latest.json").read_text())
    assert saved["scripts"] == json.loads(json.dumps(document["scripts"]))
    by_name = {item["name"]: item for item in saved["scripts"]}
    assert list(by_name) == ["good", "bad", "slow", "never"]
    good = by_name["good"]
    assert good["status"] == "ok" and good["returncode"] == 0 and good["quick"]
    assert good["figures"] == {"images": 4}  # its --json, at the quick size
    assert good["tables"] == [[{"route": "pure", "images/s": "6.0"}]]
    assert good["lines"] == ["total: 4 images in 2.5 s"]
    assert "--size 4" in " ".join(good["command"])
    bad = by_name["bad"]
    assert bad["status"] == "failed" and bad["returncode"] == 3 and "exit status 3" in bad["reason"]
    slow = by_name["slow"]
    assert slow["status"] == "timeout" and slow["seconds"] < 30 and "killed" in slow["reason"]
    never = by_name["never"]
    assert never["status"] == "skipped" and never["reason"] == "no small size: too slow"
    env = saved["environment"]
    assert env["cpu_count"] >= 1 and env["versions"]["torch"] and env["date"]
    assert {"python", "open_clip", "taskmerge_commit"} <= set(env["versions"])
    table = (out / "latest.md").read_text()
    assert "| [good](#good) | small (--quick) | ok |" in table
    assert "| [bad](#bad) | full | failed |" in table  # no small sizes: run at its full size
    assert "| [slow](#slow) | full | timeout |" in table
    assert "| images | 4 |" in table  # its --json figures stand for its printed tables
    assert "- total: 4 images in 2.5 s" in table and "| 1 | 2 |" in table  # bad's table
    assert "`python " in table and str(tmp_path) not in table  # commands as a user types them


def test_only_reruns_some_and_keeps_the_others(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_all, "SCRIPTS", FAKE)
    monkeypatch.setattr(run_all, "HERE", folder)
    out = tmp_path / "results"
    assert run_all.main(["--quick", "--only", "good", "never", "--out", str(out)]) == 0
    first = json.loads((out / "latest.json").read_text())["scripts"]
    assert [s["name"] for s in first] == ["good", "never"]
    assert run_all.main(["--only", "bad", "--out", str(out)]) == 1  # a failure: exit status 1
    names = [s["name"] for s in json.loads((out / "latest.json").read_text())["scripts"]]
    assert names == ["good", "never", "bad"]
    with pytest.raises(SystemExit):
        run_all.main(["--only", "nope", "--out", str(out)])
