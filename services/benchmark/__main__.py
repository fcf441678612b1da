"""`python -m services.benchmark` starts the benchmark service."""

from masterx_runtime.server import main
from services.benchmark.app import BenchmarkApp

if __name__ == "__main__":
    main(BenchmarkApp, BenchmarkApp)
