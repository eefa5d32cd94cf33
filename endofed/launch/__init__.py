"""Starting and stopping Flower's processes (SuperLink, SuperNodes, ``flwr run``) for the endofed CLIs.

Processes are started as subprocesses (no flwr import), each in its own process group, and ended by PID.
"""
