"""What the tests share: free ports, throw-away projects, the OpenAI stub, the managed Letta
stack, the LiveKit dev server, the local voice stack, the agent's text sessions, the browser.

The fixtures built on these live in tests/conftest.py; the programs the tests run (stubs,
stand-ins) in tests/fakes/.
"""
