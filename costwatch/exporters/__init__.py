"""Exporters: Prometheus (``prometheus.py``), OpenTelemetry (``otel.py``) and the metric contract.

``names.py`` is the contract every dashboard and rule file is written against.  Import the
exporter modules directly; this package stays light so ``import costwatch`` does not pull in the
OpenTelemetry SDK.
"""
