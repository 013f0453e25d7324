"""meshstream's own benchmarks: `make bench` (bench.run) and the processor micro-benchmark."""
