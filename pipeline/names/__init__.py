"""The `names` table: key ARN -> aliases, account id -> account name, secret ARN -> name, so alerts, the SNS
Subject, the report and `alerts list` say `alias/payments-prod (key/1234abcd…)` and `payments-prod
(210987654321)`. Rows come from the trail (`trail`: aliases over time, secret names), from AWS (`aws_refresh`:
KMS ListAliases, Organizations ListAccounts) or from a CSV (`csv_file`); `table` keeps them in the lake,
`resolve` answers "what was it called at that time" (pure). Names are enrichment: they never change an alert id.
"""
