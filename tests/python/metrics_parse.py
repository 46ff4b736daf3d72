"""Parses a metrics exposition read from stdin with prometheus_client's own parsers, an
implementation independent of keyward's, and prints the families as JSON on stdout:
[{"name", "type", "samples": [{"name", "labels", "value"}]}].

Usage: python3 metrics_parse.py [prometheus|openmetrics]
  prometheus  (default) the Prometheus text format 0.0.4: prometheus_client.parser
  openmetrics OpenMetrics 1.0 text: prometheus_client.openmetrics.parser

A value that is not finite is printed as a string ("+Inf", "NaN"), which JSON cannot hold.
"""

import json
import math
import sys

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families


def value(v):
    return v if math.isfinite(v) else str(v)


def main():
    kind = sys.argv[1] if len(sys.argv) > 1 else "prometheus"
    parse = openmetrics_families if kind == "openmetrics" else text_string_to_metric_families
    families = [
        {
            "name": f.name,
            "type": f.type,
            "samples": [
                {"name": s.name, "labels": dict(s.labels), "value": value(s.value)}
                for s in f.samples
            ],
        }
        for f in parse(sys.stdin.read())
    ]
    json.dump(families, sys.stdout)


if __name__ == "__main__":
    main()
