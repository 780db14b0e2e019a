"""Prefect flows: thin shells that run mlaas's stage functions as tasks."""
