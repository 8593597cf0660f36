"""Web plumbing shared by every blueprint: auth, errors, validation, paging, health, HTTP and state metrics."""
