"""The run side: the run specification and its presets, the one loop builder, the run journal, simulated runs
and benchmarks."""
