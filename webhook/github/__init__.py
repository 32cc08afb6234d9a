"""GitHub: the webhook route and its deliveries, pull request checks, issue forms, the REST client."""
