"""keytrail: CloudTrail KMS and Secrets Manager events -> Parquet lake -> DuckDB detections -> SNS alerts.

Importing this package never imports prefect: the flows in `flows/` wrap these functions.
"""

__version__ = "0.1.0"
