"""`python -m services.reasoning` starts the reasoning service."""

from masterx_runtime.server import main
from services.reasoning.app import ReasoningApp

if __name__ == "__main__":
    main(ReasoningApp, ReasoningApp)
