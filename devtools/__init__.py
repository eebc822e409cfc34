"""Developer tooling: the embedded PostgreSQL, the demo seed, the demo and the benchmarks."""
