"""What producers learn from the tools they run in (pure: a tool's data in, values out)."""
