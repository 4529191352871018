"""The point-in-time rules and the answers they give (pure): what was live, what changed."""
