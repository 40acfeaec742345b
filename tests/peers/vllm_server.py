"""Start/stop the real CPU vLLM test peer: `python tests/peers/vllm_server.py --port P`
prints the base URL and serves until SIGTERM. The logic lives in pylon/devstack/vllm.py so
that `pylon demo` can use it without importing from tests/; this file re-exports it."""

from pylon.devstack.vllm import (  # noqa: F401  (re-exported for tests and benches)
    VllmServer,
    VllmStartError,
    astart_vllm,
    main,
    missing_reason,
    start_vllm,
    tiny_model_dir,
)

if __name__ == "__main__":
    main()
