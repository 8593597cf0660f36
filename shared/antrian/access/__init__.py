"""Who may do what: operators' named tokens and roles, and the audit trail of what they did."""
