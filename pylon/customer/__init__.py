"""The customer's side (journey 1, ask): PylonClient, quote checks, budget, receipts."""
