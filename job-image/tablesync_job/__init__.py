"""tablesync-job: one run of the reconciliation lane (dump -> diff -> apply).

Layers import downward only: ``__main__`` (CLI) -> ``pipeline`` -> the stages ``dump``,
``diff``, ``apply`` -> the adapters ``postgres`` and ``storage`` (with ``snapshots`` for the
storage layout) -> ``spec``, ``errors``, ``logs``.
"""

__version__ = "0.1.0"
