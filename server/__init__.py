"""Coordinator role of the endofed Flower app (ServerApp and strategies).

Shipped inside the Flower app bundle (FAB), never installed into site-packages as a top-level ``server``
package. It only translates between Flower messages and ``endofed`` library calls.
"""
