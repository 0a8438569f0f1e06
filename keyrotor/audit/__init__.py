"""The account audit: parse IAM's credential report and apply the CIS rules to every access key. Pure: no I/O
(the report is fetched by :mod:`keyrotor.adapters.credential_report`)."""
