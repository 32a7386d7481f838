"""The demo's metrics: the library's instruments in Prometheus' text format.

With the ``demo`` extra installed (the OpenTelemetry SDK and its Prometheus
exporter), a :class:`PrometheusMetrics` gives the demo's context its meter
provider and renders what it measured for ``GET /metrics``; without them this
module does not import, the CLI serves no metrics and the route says what to
install. The exporter writes into a
registry of its own, not prometheus_client's global one, so two apps in one
process (the tests run several) never mix their figures.
"""

from __future__ import annotations

import prometheus_client
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider

__all__ = ["PrometheusMetrics"]


class PrometheusMetrics:
    """A meter provider whose measurements :meth:`render` reads back."""

    content_type = prometheus_client.CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self._registry = prometheus_client.CollectorRegistry()
        self.meter_provider = MeterProvider(
            metric_readers=[PrometheusMetricReader(registry=self._registry)]
        )

    def render(self) -> bytes:
        """Every instrument's current figures, in Prometheus' text format."""
        return prometheus_client.generate_latest(self._registry)

    def shutdown(self) -> None:
        self.meter_provider.shutdown()
