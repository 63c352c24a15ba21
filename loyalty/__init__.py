"""Loyalty rules engine (DESIGN §6): tiers, benefits, points ledger, cart quotes and value/lifecycle segments.

Pure and deterministic, configured in YAML (`loyalty/configs/`). Imports nothing of ours except the column names of
`features.contract`. Entry points:
- `loyalty.config.load_config(path=None)`: the rules (default: the seeds' six-tier ladder);
- `loyalty.batch.member_state(orders, events, members, as_of, config=None)`: every member at once, vectorised;
- `loyalty.member.member_state(...)`: one member (serving), identical values, with the points statement;
- `loyalty.quote.quote(cart, state, config)`: price after the tier discount and the points a cart earns.
"""
