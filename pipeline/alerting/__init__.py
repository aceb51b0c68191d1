"""Alerting: the alert contract and its ids (`alert`), SNS messages (`messages`), the lake's outbox (`outbox`),
SNS publishing (`sns`), and the one way from findings to subscribers for the CLI and the flows (`publish`).

Import the modules themselves: this package imports nothing, so `pipeline.alerting.alert` stays light.
"""
