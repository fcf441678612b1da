"""Shared runtime for MasterX services: config, logging, gRPC server bootstrap, stores."""
