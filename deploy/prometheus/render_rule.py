"""Render rules.yml as deploy/kubernetes/prometheusrule.yaml, the Prometheus Operator's PrometheusRule.

One source: rules.yml is what a plain Prometheus loads (``rule_files:``) and what ``promtool test rules``
checks; the PrometheusRule's ``spec`` is the same text, indented, comments and all.

    python deploy/prometheus/render_rule.py           # rewrite the PrometheusRule
    python deploy/prometheus/render_rule.py --check   # exit 1 if it differs from the rendering

tests/test_rules.py checks that the file checked in is the rendering.
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RULES = os.path.join(HERE, "rules.yml")
OUTPUT = os.path.join(HERE, os.pardir, "kubernetes", "prometheusrule.yaml")

_HEADER = """\
# GENERATED from deploy/prometheus/rules.yml by deploy/prometheus/render_rule.py: edit that file, then run
# the script. The alerting and recording rules for runai.reporter's series and the node agent's, for a
# Prometheus Operator. Its ruleSelector must match these labels (kube-prometheus-stack's selects
# `release: <its release name>` by default: add that label in an overlay, or set ruleSelector to {}).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: runai-reporter
  labels:
    app.kubernetes.io/name: runai-reporter
spec:
"""


def render(rules_text: str) -> str:
    """The PrometheusRule for *rules_text*: rules.yml from its ``groups:`` line on, under ``spec:``."""
    lines = rules_text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("groups:")), None)
    if start is None:
        raise ValueError("rules.yml has no top-level 'groups:' line to render")
    body = "".join(f"  {line}\n" if line.strip() else "\n" for line in lines[start:])
    return _HEADER + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if the file is not the rendering")
    args = parser.parse_args(argv)
    with open(RULES, encoding="utf-8") as f:
        rendered = render(f.read())
    try:
        with open(OUTPUT, encoding="utf-8") as f:
            current = f.read()
    except FileNotFoundError:
        current = None
    if args.check:
        if current != rendered:
            print(f"{os.path.relpath(OUTPUT)} is not the rendering of rules.yml: run {sys.argv[0]}", file=sys.stderr)
            return 1
        return 0
    if current != rendered:
        with open(OUTPUT, "w", encoding="utf-8") as f:
            f.write(rendered)
    return 0


if __name__ == "__main__":
    sys.exit(main())
