"""`make bench`: throughput and latency of the rehearsed dev stack (docs/bench.md)."""
