"""Run every generated bad input (tests/fuzz_corpus.py) through its commands; print figures.

Each (input, command) runs `netvigil` in its own subprocess with a time limit and an
address-space limit. `run --config` runs with the BPF load replaced by a marker exit
(97), so an input that gets that far was *accepted* (config validation let it through).

Outcome per run: ok (non-zero exit, no traceback, a message naming the file),
traceback, hang (time limit), memory (address-space limit hit), accepted (exit 0 or
reached the BPF load), unclear (non-zero exit, but no message naming the file).

    .venv/bin/python bench/fuzz_inputs.py [--timeout 20] [--jobs 2] [-v]
"""
from __future__ import annotations

import argparse
import collections
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fuzz_corpus import Case, all_cases, ok_rules  # noqa: E402

ENTRY = """
import os, sys
import sensor.run_command as rc
def _reached(*a, **k):
    sys.stderr.write('FUZZ: reached BPF load\\n'); sys.stderr.flush(); os._exit(97)
rc.Sensor = _reached
import sensor.enforcement.agent as ea
ea.Enforcement.start = lambda self, *a, **k: _reached()
from sensor.cli import main
sys.exit(main(sys.argv[1:]))
"""
MEMORY_LIMIT = 2 << 30


def _limits(as_nobody: bool):
    def pre() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
        if as_nobody:
            os.setgid(65534)
            os.setuid(65534)
    return pre


def classify(rc: int | None, out: str, err: str, path: Path) -> str:
    """Outcome of one run (see the module docstring)."""
    if rc is None:
        return "hang"
    text = out + err
    if "MemoryError" in text or rc in (-9, 137):
        return "memory"
    if "Traceback (most recent call last)" in text:
        return "traceback"
    if rc == 97 or rc == 0:
        return "accepted"
    if str(path) not in text and path.name not in text:
        return "unclear"
    return "ok"


def run_one(case: Case, command: str, root: Path, timeout: float, python: str
            ) -> tuple[Case, str, str, str]:
    work = Path(tempfile.mkdtemp(dir=root))
    work.chmod(0o755)
    ok_rules(work)
    path = case.build(work)
    argv = [python, "-c", ENTRY, *case.argv(command, path, work)]
    env = dict(os.environ, NETVIGIL_CONFIG="", HOME=str(work))
    env.pop("NETVIGIL_CONFIG")
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              preexec_fn=_limits(case.as_nobody), env=env, cwd=work,
                              errors="replace")
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, out, err = None, str(exc.stdout or ""), str(exc.stderr or "")
    outcome = classify(rc, out, err, path)
    for p in work.rglob("*"):
        try:
            p.chmod(0o755)
        except OSError:
            pass
    shutil.rmtree(work, ignore_errors=True)
    last = (err.strip() or out.strip()).splitlines()[-1:] if (err or out) else []
    return case, command, outcome, last[0][:160] if last else ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timeout", type=float, default=20.0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("-v", "--verbose", action="store_true", help="one line per bad outcome")
    ap.add_argument("--only", help="only cases whose kind or name contains this")
    args = ap.parse_args()
    cases = all_cases()
    if args.only:
        cases = [c for c in cases if args.only in c.kind or args.only in c.name]
    root = Path(tempfile.mkdtemp(prefix="nv-fuzz-"))
    root.chmod(0o755)
    os.environ["TMPDIR"] = str(root)
    runs = [(c, cmd) for c in cases for cmd in c.commands]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda r: run_one(*r, root, args.timeout, sys.executable), runs))
    shutil.rmtree(root, ignore_errors=True)
    totals: collections.Counter[str] = collections.Counter()
    per_kind: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for case, command, outcome, last in results:
        totals[outcome] += 1
        per_kind[f"{case.kind}/{command}"][outcome] += 1
        if args.verbose and outcome != "ok":
            print(f"{outcome:9} {case.kind:9} {command:9} {case.name}: {last}")
    print(f"inputs: {len(cases)}  runs: {len(runs)}  timeout: {args.timeout:g}s  "
          f"memory limit: {MEMORY_LIMIT >> 20} MiB")
    for key in sorted(per_kind):
        print(f"  {key:22} " + "  ".join(f"{k}={v}" for k, v in sorted(per_kind[key].items())))
    print("total: " + "  ".join(f"{k}={totals.get(k, 0)}" for k in
                                ("ok", "traceback", "hang", "memory", "accepted", "unclear")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
