"""Host functions for metrics: counters, gauges and histograms, with Envoy's id encoding (the low
two bits of a metric id carry its type)."""

from __future__ import annotations

from support.proxywasm_host.abi import MAX_METRICTYPE, U64, MetricType, Status, hostcall, text_of
from support.proxywasm_host.vm import VmBase


class MetricCalls(VmBase):
    """proxy_define_metric, proxy_{increment,record,get}_metric."""

    metrics: dict[str, int]
    histograms: dict[str, list[int]]
    metric_types: dict[str, MetricType]
    _metric_ids: dict[int, tuple[MetricType, str]]
    _next_metric_id: dict[MetricType, int]

    @hostcall("proxy_define_metric", "iiii")
    def _proxy_define_metric(self, kind: int, nptr: int, nlen: int, ret: int) -> int:
        if kind > MAX_METRICTYPE:
            return self._warn(Status.BAD_ARGUMENT, f"proxy_define_metric type {kind}")
        name = text_of(self._read(nptr, nlen))
        metric_type = MetricType(kind)
        self._next_metric_id[metric_type] += 4  # Envoy: the low two bits carry the type
        metric_id = self._next_metric_id[metric_type]
        self._metric_ids[metric_id] = (metric_type, name)
        self.metric_types[name] = metric_type
        if metric_type == MetricType.HISTOGRAM:
            self.histograms.setdefault(name, [])
        else:
            self.metrics.setdefault(name, 0)
        self._write_u32(ret, metric_id)
        return Status.OK

    def _metric(self, metric_id: int) -> tuple[MetricType, str] | None:
        return self._metric_ids.get(metric_id)

    @hostcall("proxy_increment_metric", "iI")
    def _proxy_increment_metric(self, metric_id: int, delta: int) -> int:
        metric = self._metric(metric_id)
        if metric_id & 3 not in (MetricType.COUNTER, MetricType.GAUGE):
            return Status.BAD_ARGUMENT
        if metric is None:
            return Status.NOT_FOUND
        if metric[0] == MetricType.COUNTER and delta <= 0:
            return self._warn(
                Status.BAD_ARGUMENT, f"proxy_increment_metric({metric[1]}, {delta}) on a counter"
            )
        self.metrics[metric[1]] = self.metrics.get(metric[1], 0) + delta
        return Status.OK

    @hostcall("proxy_record_metric", "iI")
    def _proxy_record_metric(self, metric_id: int, value: int) -> int:
        metric = self._metric(metric_id)
        if metric is None:
            return Status.NOT_FOUND
        value &= U64
        metric_type, name = metric
        if metric_type == MetricType.COUNTER:  # Envoy adds the value to a counter
            self.metrics[name] = self.metrics.get(name, 0) + value
        elif metric_type == MetricType.GAUGE:
            self.metrics[name] = value
        else:
            self.histograms.setdefault(name, []).append(value)
        return Status.OK

    @hostcall("proxy_get_metric", "ii")
    def _proxy_get_metric(self, metric_id: int, ret: int) -> int:
        metric = self._metric(metric_id)
        if metric_id & 3 not in (MetricType.COUNTER, MetricType.GAUGE):
            return Status.BAD_ARGUMENT
        if metric is None:
            return Status.NOT_FOUND
        self._write_u64(ret, self.metrics.get(metric[1], 0))
        return Status.OK
