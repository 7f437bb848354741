"""tgir.benchmarks: the latency/accuracy harness behind ``tgir bench``. Results: RESULTS.md."""
