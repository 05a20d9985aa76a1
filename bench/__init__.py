"""`make bench`: the suite's throughput and latency figures beside baselines from the same run.

Everything runs on one small machine, so absolute numbers say little; each figure is printed
beside a baseline measured in the same run (a trivial gRPC call, a raw pipelined XADD, a raw
XREAD) and beside its budget from design.md §9.

Adding a section: write `bench/<name>_bench.py` with `async def measure(...) -> dict[str,
float]` and append `Section("name", measure)` to `SECTIONS` in `bench/harness.py` (a lambda
adapts another signature: `lambda ctx: measure(ctx.settings)`). `BenchContext` carries the
suite's endpoints, the options and the figures measured so far. Describe new figures in
`bench/figures.py` (label, unit, baseline, budget); the wallet and webhook figures are already
there, and an undescribed figure is still printed and saved.

Cost per completed payment (CPU per process, transactions, statements, calls, events, Redis
commands) is metered over loops in which each client holds one payment at a time: see
`bench/cost.py` (windows and arithmetic), `bench/proc.py`, `bench/pglog.py`,
`bench/counters.py`, and `bench/cost_report.py` for the table printed first.

Run it: `make bench` (BENCH_ARGS="--quick" for a smoke run, "--target-running" for the suite
`make run` started), or `paysuite bench --help`.
"""
