"""Benchmarks: end-to-end throughput and latency through Kafka into the database (README.md)."""
