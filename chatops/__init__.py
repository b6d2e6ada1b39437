"""The chatops bridge (`tcscale chatops`): chat commands -> Prefect deployment runs, results posted back.

Modules: settings (env TCSCALE_CHATOPS_*), signing (generic HMAC, WeCom crypto), commands, policy (allowlist),
store (SQLite + audit file), runs (Prefect API), status (live topology), replies (platform APIs), bridge (one
message), results (posting finished runs), inbound (body limit, audited refusals), wecom_robot (the group robot's
callback), app (the ASGI routes).
"""
