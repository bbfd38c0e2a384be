"""The sample Grafana dashboard, built with Grafana's grafana-foundation-sdk: the source of
runai-reporter-dashboard.json beside this file.

    pip install 'grafana-foundation-sdk==1769699998!10.1.0'   # the test extra has it (Python >= 3.11)
    python docs/grafana/dashboard.py           # rewrite the JSON
    python docs/grafana/dashboard.py --check   # exit 1 if the JSON is not this file's output

Every query reads the series under runai 0.4.1's names, as the Pushgateway
(scraped with honor_labels) and a remote-write receiver both hold them; the
progress and freshness panels read the recording rules of
deploy/prometheus/rules.yml, which the Prometheus must load. tests/test_dashboard.py
checks the JSON is this output and runs every query against a real Prometheus.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from grafana_foundation_sdk.builders import common, dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import BigValueGraphMode, LegendDisplayMode, LegendPlacement
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    DataTransformerConfig,
    VariableHide,
    VariableRefresh,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runai-reporter-dashboard.json")

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
REPORTS = 'job="reporter_pod_info"'
PODS = 'podUUID=~"$pod"'
METRICS = f'{REPORTS}, push_gateway_type="metric"'
# Names are [a-zA-Z0-9_] (the reporter sanitizes them): loss, val_loss, train_loss, eval_loss; accuracy,
# val_accuracy, train_acc, eval_accuracy. Case-insensitive, as RunaiTrainingLossNotFinite matches.
LOSS_NAMES, ACCURACY_NAMES = "(?i).*loss.*", "(?i).*acc.*"


def query(expr: str, legend: str = "{{podUUID}}", instant: bool = False) -> prometheus.Dataquery:
    target = prometheus.Dataquery().ref_id("A").expr(expr).legend_format(legend).datasource(DATASOURCE)
    return target.instant() if instant else target.range()


def last_value(
    title: str, panel_id: int, unit: str, description: str, expr: str, legend: str = "{{podUUID}}"
) -> stat.Panel:
    """A stat of each series' last value (an instant query over the dashboard's range)."""
    return (
        stat.Panel()
        .id(panel_id)
        .title(title)
        .datasource(DATASOURCE)
        .span(8)
        .height(5)
        .unit(unit)
        .description(description)
        .graph_mode(BigValueGraphMode.NONE)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .with_target(query(expr, legend, instant=True))
    )


def metric_names(name: str, label: str, pattern: str | None) -> dashboard.QueryVariable:
    """A variable listing the metric names of the picked pods (matching *pattern*), all picked by default."""
    matcher = f', metric_name=~"{pattern}"' if pattern else ""
    definition = f"label_values({{{METRICS}, {PODS}{matcher}}}, metric_name)"
    return (
        dashboard.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(definition)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True)
        .include_all(True)
        .sort(1)
        .current({"text": ["All"], "value": ["$__all"]})
    )


def per_metric(variable: str, panel_id: int, unit: str, span: int) -> timeseries.Panel:
    """One panel per metric name the variable holds (Grafana repeats it), each on its own axis."""
    return (
        timeseries.Panel()
        .id(panel_id)
        .title(f"${variable}")
        .datasource(DATASOURCE)
        .repeat(variable)
        .repeat_direction("h")
        .span(span)
        .height(8)
        .unit(unit)
        .legend(
            common.VizLegendOptions()
            .show_legend(True)
            .display_mode(LegendDisplayMode.LIST)
            .placement(LegendPlacement.BOTTOM)
        )
        .description(
            "Gateway series: the last value at each scrape; remote-written: every report. "
            "runai-uploader history has every report of a pod."
        )
        .with_target(query(f'{{{METRICS}, metric_name=~"${variable}", {PODS}}}'))
    )


def build() -> dashboard.Dashboard:
    board = (
        dashboard.Dashboard("runai reporter")
        .uid("runai-reporter")
        .description(
            "Metrics and parameters that runai.reporter (and runai 0.4.1) report, from a Pushgateway "
            "scraped with honor_labels: true or a remote-write receiver; progress and freshness need "
            "the recording rules of deploy/prometheus/rules.yml."
        )
        .tags(["runai", "pushgateway", "training"])
        .editable()
        .refresh("10s")
        .time("now-1h", "now")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .with_variable(dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
        .with_variable(
            dashboard.QueryVariable("pod")
            .label("podUUID")
            .datasource(DATASOURCE)
            .query(f"label_values({{{REPORTS}}}, podUUID)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .multi(True)
            .include_all(True)
            .sort(1)
        )
        .with_variable(metric_names("loss", "loss metrics", LOSS_NAMES))
        .with_variable(metric_names("accuracy", "accuracy metrics", ACCURACY_NAMES))
        .with_variable(metric_names("metric", "every metric", None).hide(VariableHide.HIDE_VARIABLE))
    )
    board.with_row(dashboard.Row("Progress").id(1))
    board.with_panel(
        last_value(
            "Training progress",
            2,
            "percentunit",
            "runai:training_progress:ratio (deploy/prometheus/rules.yml): the fraction of training done, 1 at the "
            "end of a Keras, Lightning or Transformers run.",
            f"last_over_time(runai:training_progress:ratio{{{PODS}}}[$__range])",
        )
        .min(0)
        .max(1)
    )
    board.with_panel(
        last_value(
            "Since the last report",
            3,
            "s",
            "runai:last_report:timestamp_seconds: the gateway's push_time_seconds, or the time of a remote-written "
            "pod's newest sample. A finished job stops reporting: large is not broken.",
            f"time() - max_over_time(runai:last_report:timestamp_seconds{{{PODS}}}[$__range])",
        )
    )
    board.with_panel(
        last_value(
            "Batch size and layers",
            4,
            "none",
            "The last batch_size and number_of_layers of each pod.",
            f'last_over_time({{{METRICS}, metric_name=~"batch_size|number_of_layers", {PODS}}}[$__range])',
            "{{metric_name}} {{podUUID}}",
        )
    )
    board.with_row(dashboard.Row("Loss").id(5))
    board.with_panel(per_metric("loss", 6, "none", 12))
    board.with_row(dashboard.Row("Accuracy").id(7))
    board.with_panel(per_metric("accuracy", 8, "percentunit", 12))
    board.with_row(dashboard.Row("Parameters").id(9))
    board.with_panel(
        table.Panel()
        .id(10)
        .title("Parameters")
        .datasource(DATASOURCE)
        .span(24)
        .height(8)
        .show_header(True)
        .description("reportParameter values (optimizer_name, learning_rate, ...) are labels: param_value.")
        .with_transformation(
            DataTransformerConfig(id_val="organize", options={"excludeByName": {"Time": True, "Value": True}})
        )
        .with_target(
            query(
                "max by (podUUID, param_name, param_value) "
                f'(last_over_time({{{REPORTS}, push_gateway_type="parameter", {PODS}}}[$__range]))',
                instant=True,
            ).format(PromQueryFormat.TABLE)
        )
    )
    # Last and collapsed: a panel per name, dozens for a Transformers run (total_flos, train_runtime, ...).
    board.with_row(dashboard.Row("Every metric").id(11).collapsed(True).with_panel(per_metric("metric", 12, "none", 6)))
    return board


def render() -> str:
    return json.dumps(build().build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if the JSON is not the output")
    rendered, args = render(), parser.parse_args(argv)
    try:
        with open(OUTPUT, encoding="utf-8") as f:
            current: str | None = f.read()
    except FileNotFoundError:
        current = None
    if args.check:
        if current != rendered:
            print(f"{os.path.relpath(OUTPUT)} is not the output of {sys.argv[0]}: run it", file=sys.stderr)
            return 1
        return 0
    if current != rendered:
        with open(OUTPUT, "w", encoding="utf-8") as f:
            f.write(rendered)
    return 0


if __name__ == "__main__":
    sys.exit(main())
