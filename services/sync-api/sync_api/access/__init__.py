"""Operators: their tokens (admin only) and the audit trail of what they did."""
