"""The results model: the results.csv column spec (identity, options, metric columns; core or extra), the
schema version and its migrations, the one cell-to-text conversion, `Run.load`, and speedup / saving.

Layering: vimbench.metrics (declarations and collectors) < vimbench.results < measure, report, gate < cli.
"""

from .cells import cell_text, number, point_key, row_options
from .columns import (
    ALL_COLUMNS,
    CORE_COLUMNS,
    OPTION_COLUMNS,
    OPTION_SHORT,
    POINT_KEY,
    SCHEMA_VERSION,
    STATUSES,
    all_column_specs,
    all_columns,
    column,
    core_columns,
    numeric_columns,
    option_names,
)
from .csvtext import complete_text
from .devices import distinct_devices, require_one_device
from .ratios import saving_pct, speedup
from .row import ResultRow, parse_row, typed_row
from .run import RESULTS_FILE, RUN_FILE, ResultsError, Run, RunMetaError, read_run_json

__all__ = [
    "ALL_COLUMNS",
    "CORE_COLUMNS",
    "OPTION_COLUMNS",
    "OPTION_SHORT",
    "POINT_KEY",
    "RESULTS_FILE",
    "RUN_FILE",
    "SCHEMA_VERSION",
    "STATUSES",
    "ResultRow",
    "ResultsError",
    "Run",
    "RunMetaError",
    "all_column_specs",
    "all_columns",
    "cell_text",
    "column",
    "complete_text",
    "core_columns",
    "distinct_devices",
    "number",
    "numeric_columns",
    "option_names",
    "parse_row",
    "point_key",
    "read_run_json",
    "require_one_device",
    "row_options",
    "saving_pct",
    "speedup",
    "typed_row",
]
