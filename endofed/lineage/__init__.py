"""Lineage of the global encoders: the sites' passport hashes, what a run did, and each checkpoint's model card.

:mod:`endofed.lineage.passport` hashes a site's data passport (at the site) and carries the hash in scalar metrics;
:mod:`endofed.lineage.record` accumulates, round by round at the coordinator, which sites trained in which phase;
:mod:`endofed.lineage.card` builds a card (pure) and writes and verifies it next to its checkpoint.
No flwr, no torch: the ServerApp, the ClientApp and the CLI all import these.
"""
