"""`helm lint` and `helm template` without a helm binary: Helm 4's own Go SDK, shipped as a
shared library in the `helm-python-sdk` wheel (a dev dependency; no helm binary is packaged on
PyPI, npm or Debian). The chart is loaded, linted and rendered by Helm's code, not a look-alike.

    python scripts/helm.py lint deploy/helm/consentry [-f VALUES.yaml] [--set a.b=c] [--strict]
    python scripts/helm.py template RELEASE deploy/helm/consentry [-f VALUES.yaml] [--set a.b=c]
        [--namespace NS] [--api-versions monitoring.coreos.com/v1]

    python scripts/helm.py cases deploy/helm/consentry < CASES.json   (many renders, one process)

`template` prints the manifests as `helm template` does (`---` and `# Source:` before each);
`lint` prints the findings and exits 1 on an error (or a warning with --strict). A template's
`fail` exits 1 with its message. (--api-versions is accepted for the chart's
.Capabilities.APIVersions.Has: the SDK renders offline with the default capabilities, so
monitoring.coreos.com/v1 there sets monitoring.prometheusOperator=true instead.)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def user_values(args: argparse.Namespace, helm: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for path in args.values or []:
        values = deep_merge(values, helm.values_from_yaml(Path(path).read_text()) or {})
    for expression in args.set or []:
        values = deep_merge(values, helm.parse_set_string(expression))
    if "monitoring.coreos.com/v1" in (args.api_versions or []):
        values = deep_merge(values, {"monitoring": {"prometheusOperator": True}})
    return values


def manifests_text(manifests: dict[str, str]) -> str:
    out = []
    for path in sorted(manifests):
        text = manifests[path].strip()
        if path.endswith("NOTES.txt") or not text or all(line.startswith("#") or not line.strip() for line in text.splitlines()):
            continue
        out.append(f"---\n# Source: {path}\n{text}")
    return "\n".join(out)


def cases(chart_path: str, requested: dict[str, Any], helm: Any) -> dict[str, Any]:
    """{"lint": values, "template": {case: values}} -> {"lint": report, "template": {case: {"manifests" | "error"}}}
    (release `consentry`, namespace `consentry`): loading Helm's library once for a whole test module."""
    result: dict[str, Any] = {"template": {}}
    if "lint" in requested:
        result["lint"] = helm.lint(chart_path, requested["lint"], strict=True, namespace="consentry")
    chart = helm.Chart.load(chart_path)
    for name, values in requested.get("template", {}).items():
        try:
            rendered = chart.render(values, name="consentry", namespace="consentry", is_install=True)
            result["template"][name] = {"manifests": manifests_text(rendered)}
        except helm.HelmError as exc:
            result["template"][name] = {"error": str(exc)}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="helm.py", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    lint = commands.add_parser("lint")
    template = commands.add_parser("template")
    template.add_argument("release")
    for sub in (lint, template):
        sub.add_argument("chart")
        sub.add_argument("-f", "--values", action="append")
        sub.add_argument("--set", action="append")
        sub.add_argument("-n", "--namespace", default="default")
        sub.add_argument("--api-versions", action="append")
    lint.add_argument("--strict", action="store_true")
    many = commands.add_parser("cases")
    many.add_argument("chart")
    args = parser.parse_args(argv)

    import helm_python as helm

    if args.command == "cases":
        json.dump(cases(args.chart, json.load(sys.stdin), helm), sys.stdout)
        return 0

    values = user_values(args, helm)
    try:
        if args.command == "lint":
            report = helm.lint(args.chart, values, strict=args.strict, namespace=args.namespace)
            worst = 0
            for message in report.get("messages") or []:
                severity = {1: "INFO", 2: "WARNING", 3: "ERROR"}.get(message["severity"], "UNKNOWN")
                worst = max(worst, message["severity"])
                print(f"[{severity}] {message['path']}: {message['error']}")
            for error in report.get("errors") or []:
                print(f"[ERROR] {error}")
            failed = bool(report.get("errors")) or worst >= (2 if args.strict else 3)
            print(f"{report.get('total_charts_linted', 0)} chart(s) linted, {'1 chart(s) failed' if failed else '0 chart(s) failed'}")
            return 1 if failed else 0
        chart = helm.Chart.load(args.chart)
        manifests = chart.render(values, name=args.release, namespace=args.namespace, is_install=True)
    except helm.HelmError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    print(manifests_text(manifests))
    return 0


if __name__ == "__main__":
    sys.exit(main())
