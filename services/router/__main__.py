"""`python -m services.router` starts the router service."""

from masterx_runtime.server import main
from services.router.app import RouterApp

if __name__ == "__main__":
    main(RouterApp, RouterApp)
