"""tablesync's benchmark suite (``make bench``, ``python -m bench``): issue 2's "Benchmark".

Each phase of the job (dump, diff, apply, the whole run) is measured on a generated
product-price table, in a process of its own (wall time, peak RSS), beside a baseline measured
in the same run on the same machine: the server's own binary COPY, a naive full-row diff,
row-by-row ``executemany`` upserts, a bootstrap run. Figures are printed, not asserted; the
smoke test (``tests/integration/bench``) only checks that ``--quick`` runs. Layout:
``__main__`` (command line) · ``settings`` (sizes, targets) · ``env`` (servers) · ``data``
(generated rows) · ``measure`` (child processes) · ``results`` (table) · one module per
benchmark: ``dump``, ``diff``, ``apply``, ``whole_run``.
"""
