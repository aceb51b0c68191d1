"""Trust the trail: CloudTrail digest-chain and log-file verification.

Modules: `digest_file` (the digest JSON, the signed string, object names; pure), `log_hash` (SHA-256 of a
log's single gzip member while it streams), `keys` (ListPublicKeys keys, signature checks), `chain` (judging one
account/region: digests, continuity, gaps, log files; pure), `results` (the `integrity/` table's rows, coverage),
`verify` (listing and reading a source, the I/O edge).
"""
