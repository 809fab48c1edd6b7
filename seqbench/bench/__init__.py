"""Performance benchmarks: measured numbers written to reports/bench/, never timed tests."""
