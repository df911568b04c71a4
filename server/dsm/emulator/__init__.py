"""A local stand-in for Roblox Open Cloud, speaking the same HTTP surface."""
