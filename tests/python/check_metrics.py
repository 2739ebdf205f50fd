#!/usr/bin/env python3
"""Reads a broker's /metrics with Prometheus's own text-format parser (python3-prometheus-client).

    check_metrics.py URL

Exits non-zero if the parser rejects the text. Prints JSON: the content type, the families
(name → type) and every sample as "name{label=value,...}" (labels sorted) → value (NaN as null).
Used by tests/broker/dashboard_http_test.cpp and dashboard_browser_test.cpp.
"""
import json
import math
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def main():
    with urllib.request.urlopen(sys.argv[1], timeout=10) as r:
        content_type = r.headers.get("Content-Type")
        text = r.read().decode("utf-8")
    families, samples = {}, {}
    for fam in text_string_to_metric_families(text):  # raises ValueError on malformed text
        if fam.name in families:
            raise ValueError(f"family {fam.name} appears twice")
        families[fam.name] = fam.type
        for s in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            key = f"{s.name}{{{labels}}}"
            if key in samples:
                raise ValueError(f"sample {key} appears twice")
            samples[key] = None if math.isnan(s.value) else s.value
    print(json.dumps({"content_type": content_type, "families": families, "samples": samples}))


if __name__ == "__main__":
    main()
