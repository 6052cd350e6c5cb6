"""Submitting and watching Ray jobs (used by the Airflow DAG)."""
