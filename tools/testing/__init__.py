"""Code that tests, tools and benchmarks share: a real companion server on loopback
(`server`), a real emulator app on loopback (`emulator`), and the plugin in the Luau harness
driven like a user (`plugin`). Tools and tests import from here, never from each other.
"""
