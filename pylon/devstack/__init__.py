"""Local development stack: start the real peers (vLLM on the CPU, ...) that demos, tests and
benches run against. Nothing here is used by a production provider or client."""
