"""`make bench`: the suite's throughput and latency figures beside baselines from the same run.

Everything runs on one small machine, so absolute numbers say little; each figure is printed
beside a baseline measured in the same run (a trivial gRPC call, a raw pipelined XADD, a raw
XREAD) and beside its budget from design.md §9.

Adding a section: write `bench/<name>_bench.py` with `async def measure(ctx: BenchContext) ->
dict[str, float]`, append it to `SECTIONS` in `bench/harness.py`, and describe its figures in
`FIGURES` in `bench/figures.py` (a figure without a description is still printed and saved).
"""
