"""MasterX services; each subpackage is one separately deployable process."""
