"""The deployment topology from the Debian packages (servers.py) and its composition (topology.py)."""
