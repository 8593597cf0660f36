"""Web plumbing shared by every blueprint: auth, errors, validation, paging, health, metrics, admin pages."""
