"""The configuration: TOML file -> validated model, the checks behind `ironwatt check`, records.

The daemon never imports pydantic: it validates in a child (`gateway.config.worker`) and gets
plain records back (`gateway.config.records`).
"""
