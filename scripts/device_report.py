"""scripts/device_check.sh's report: its stages' files merged into one JSON, and a summary printed.

    python scripts/device_report.py STAGES_DIR OUT.json [--dry-run 0|1] [--wall-s S] [--total-s S]

STAGES_DIR holds NAME.status.json (status, rc, wall_s, limit_s) and NAME.out (what it printed) for each
stage, and the figures the stages wrote: devices.json, smoke.json, tests.xml, train.json, population.json,
sample.json. A file a stage did not write (it failed, or ran out of time) is left out and said so.
"""

import argparse
import datetime
import json
import pathlib
import re
import sys
import xml.etree.ElementTree as ET

STAGES = ("install", "devices", "smoke", "tests", "train", "population", "sample")
RESULT = re.compile(r"\b(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b\s+(tests/\S+)|(tests/\S+::\S+)\s+(PASSED|FAILED|ERROR|SKIPPED)")


def read_json(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def test_results(stages):
    """Counts and the names of the failures: from the JUnit XML, or (pytest stopped before writing it) from
    the -v lines it printed."""
    xml = stages / "tests.xml"
    if xml.exists():
        try:
            results = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "failures": [], "source": "junit"}
            for case in ET.parse(xml).iter("testcase"):
                name = f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name')}"
                outcome = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), None)
                key = {"failure": "failed", "error": "errors", "skipped": "skipped"}.get(outcome, "passed")
                results[key] += 1
                if outcome in ("failure", "error"):
                    message = next(child for child in case if child.tag == outcome).get("message", "")
                    results["failures"].append({"test": name, "message": message[:300]})
            return results
        except ET.ParseError:
            pass
    out = stages / "tests.out"
    if not out.exists():
        return None
    seen = {}
    for line in out.read_text(errors="replace").splitlines():
        m = RESULT.search(line)
        if m:
            outcome, test = (m.group(1), m.group(2)) if m.group(1) else (m.group(4), m.group(3))
            seen[test] = outcome
    counts = {k: sum(v == k.upper() for v in seen.values()) for k in ("passed", "failed", "error", "skipped")}
    return {"passed": counts["passed"], "failed": counts["failed"], "errors": counts["error"],
            "skipped": counts["skipped"], "failures": [{"test": t} for t, v in seen.items() if v in ("FAILED", "ERROR")],
            "source": "pytest -v lines (no JUnit XML: pytest was stopped)"}


def summary(report):
    lines = [f"device_check ({'CPU dry run' if report['dry_run'] else 'device run'}): {report['wall_s']} s of "
             f"{report['total_s']} s"]
    devices = report.get("devices") or {}
    if devices:
        kinds = sorted({f"{d['platform']} {d['kind']}" for d in devices.get("devices", [])})
        lines.append(f"devices: {len(devices.get('devices', []))} x {', '.join(kinds)}; jax "
                     f"{devices.get('versions', {}).get('jax')}, python {devices.get('python')}")
    for name in STAGES:
        s = report["stages"].get(name, {"status": "absent"})
        lines.append(f"  {name:<11} {s['status']:<8} {s.get('wall_s', '-'):>4} s (limit {s.get('limit_s', '-')})")
    smoke = report.get("smoke")
    if smoke:
        lines.append(f"smoke: {smoke.get('total_s')} s " + ", ".join(f"{k} {v}" for k, v in smoke["stages_s"].items()))
    tests = report.get("tests")
    if tests:
        lines.append(f"tests: passed {tests['passed']}, failed {tests['failed']}, errors {tests['errors']}, "
                     f"skipped {tests['skipped']}")
        lines += [f"  FAILED {f['test']}: {f.get('message', '')[:150]}" for f in tests["failures"][:15]]
    for row in report.get("train") or []:
        times = ", ".join(f"{k[:-3].replace('mmjax', 'float32' if k == 'mmjax_ms' else '').strip('_')} {v:.3f}"
                          for k, v in row.items() if k.startswith("mmjax") and k.endswith("_ms"))
        compiles = ", ".join(f"{v:.1f}" for k, v in row.items() if k.endswith("_compile_s"))
        lines.append(f"train {row['type']} ({row.get('steps_per_dispatch')}-step dispatches): ms/step {times}; "
                     f"compile s {compiles}")
    for row in report.get("population") or []:
        if "error" in row:
            lines.append(f"population K={row['K']}: {row['error'][:120]}")
            continue
        memory = f", {row['bytes_per_member'] / 2**20:.2f} MiB/member" if row.get("bytes_per_member") is not None else ""
        lines.append(f"population K={row['K']}: {row['member_steps_per_s']:.0f} member-steps/s "
                     f"({row['ms_per_step']:.2f} ms/step, speedup {row['speedup']}x){memory}, compile "
                     f"{row.get('compile_s')} s")
    sample = report.get("sample") or {}
    for row in sample.get("sampler", []):
        lines.append(f"sample batch {row['batch']}: {row['mmjax_names_per_s']:,.0f} names/s, compile "
                     f"{row['mmjax_compile_s']:.1f} s")
    if report["missing"]:
        lines.append("not written (the stage failed or ran out of time): " + ", ".join(report["missing"]))
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stages", type=pathlib.Path)
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--dry-run", type=int, default=0)
    parser.add_argument("--wall-s", type=int)
    parser.add_argument("--total-s", type=int)
    parser.add_argument("--strict", action="store_true", help="exit 1 unless every stage passed (the dry run)")
    args = parser.parse_args()
    report = {"written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "dry_run": bool(args.dry_run), "wall_s": args.wall_s, "total_s": args.total_s, "stages": {},
              "missing": []}
    for name in STAGES:
        status = read_json(args.stages / f"{name}.status.json")
        report["stages"][name] = status or {"status": "absent"}
    for name in ("devices", "smoke", "train", "population", "sample"):
        report[name] = read_json(args.stages / f"{name}.json")
        if report[name] is None:
            report["missing"].append(f"{name}.json")
    report["tests"] = test_results(args.stages)
    if report["tests"] is None:
        report["missing"].append("tests.xml")
    for name in STAGES:  # the end of what each stage that did not pass printed
        s = report["stages"][name]
        out = args.stages / f"{name}.out"
        if s["status"] not in ("ok", "skipped") and out.exists():
            s["output_tail"] = out.read_text(errors="replace")[-3000:]
    args.out.write_text(json.dumps(report, indent=1))
    print(summary(report))
    print(f"report: {args.out}")
    failed = [name for name, s in report["stages"].items() if s["status"] != "ok"]
    if report["tests"] and (report["tests"]["failed"] or report["tests"]["errors"]):
        failed.append("tests (failures)")
    if args.strict and failed:
        print(f"device_check: FAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
