"""The guest apps (session service, business app), their HTTP front, their service managers and disk layout."""
