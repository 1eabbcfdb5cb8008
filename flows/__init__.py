"""Prefect flows: orchestration only. Every computation lives in mmp_core or runs as a DVC stage."""
