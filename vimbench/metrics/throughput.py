"""Throughput: images per second, the median over repeats, with the per-repeat samples the gate tests."""

from __future__ import annotations

from .spec import Column, Metric, TableColumn
from .timer import from_timer


def _band(ok):
    """The slowest tenth of batches gives the low end of throughput, the fastest tenth the high end."""
    batch = ok["batch_size"].to_numpy()
    return batch * 1e3 / ok["latency_ms_p90"].to_numpy(), batch * 1e3 / ok["latency_ms_p10"].to_numpy()

METRIC = Metric(
    name="throughput",
    value_column="throughput",
    unit="img/s",
    direction="higher",
    label="throughput (images/s, median)",
    title="Throughput vs resolution",
    band=_band,
    table=(TableColumn("img/s", "throughput", ".2f"),),
    columns=(
        Column("throughput", "float", "img/s", "higher", doc="images/s, median over repeats"),
        Column("throughput_samples", "floats", "img/s", doc="per-repeat images/s, space separated"),
    ),
    gate=True,
    samples_column="throughput_samples",
    collector=from_timer("throughput", "throughput_samples"),
)
