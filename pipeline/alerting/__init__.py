"""Alerting: the alert contract and its ids (`alert`), SNS messages (`messages`), the lake's outbox (`outbox`:
alert states; `outbox_store`: its SQLite file, errors and repair), SNS publishing (`sns`; `sns_errors`: whose
fault a failure is), and the one way from findings to subscribers for the CLI and the flows (`publish`).

Import the modules themselves: this package imports nothing, so `pipeline.alerting.alert` stays light.
"""
